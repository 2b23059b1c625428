"""Output that is not UTF-8 is rendered exactly (issue 11, point 7: binary output).

The text route serves the stored bytes as they are. An SSE log frame carries UTF-8
as it is (``event: log``, its text) and any other bytes in base64 (``event:
log-b64``): nothing is replaced with U+FFFD, valid UTF-8 is not inflated at all,
binary by a third (it was 300 KB to 543 KB), and a character cut between two
chunks comes back whole. Every frame's ``id:`` is the byte offset after it, so a
resume anywhere, even inside a character, is exact.
"""

from __future__ import annotations

import base64
import json
import random

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import WRITER, submit_local, wait_terminal

from egw.web.keys import service_key

Client = TestClient[web.Request, web.Application]

SSE = {**WRITER, "Accept": "text/event-stream"}
TEXT = "naïve café, 東京, emoji 🙂\n".encode()
BINARY = random.Random(11).randbytes(300_000)
EURO = "price: 5€ per unit\n".encode()
CUT = EURO.index(b"\xe2") + 1  # the chunk ends after the first byte of €


async def sse(api: Client, task_id: str, at: int = 0) -> tuple[bytes, list[dict[str, str]]]:
    """The raw body of the task's event stream from byte ``at``, and its frames."""
    headers = {**SSE, "Last-Event-ID": str(at)} if at else SSE
    async with api.get(f"/v1/tasks/{task_id}/logs", headers=headers) as resp:
        body = await resp.read()
    frames = []
    for block in body.decode().split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if lines:
            frames.append(dict(ln.split(": ", 1) for ln in lines))
    return body, frames


def output_of(frames: list[dict[str, str]]) -> bytes:
    out = b""
    for frame in frames:
        if frame.get("event") == "log":
            out += json.loads(frame["data"])["text"].encode()
        elif frame.get("event") == "log-b64":
            out += base64.b64decode(json.loads(frame["data"])["base64"])
    return out


async def test_binary_output_is_exact_in_text_and_sse_and_utf8_is_not_inflated(
    api: Client,
) -> None:
    task = await submit_local(api, "sleep", "30")
    service = api.app[service_key]
    parts = [TEXT, EURO[:CUT], EURO[CUT:], BINARY, TEXT]
    for part in parts:
        await service.append_log(task["id"], "stdout", part)
    await api.post(f"/v1/tasks/{task['id']}/cancel", headers=WRITER)
    await wait_terminal(api, task["id"])
    stored = b"".join(parts)

    resp = await api.get(f"/v1/tasks/{task['id']}/logs", headers=WRITER)
    assert await resp.read() == stored  # the text route: the bytes as they are

    body, frames = await sse(api, task["id"])
    assert output_of(frames) == stored
    logs = [f for f in frames if f.get("event", "").startswith("log")]
    # UTF-8 chunks are one text frame each, their text exactly; the ids are byte offsets
    assert json.loads(logs[0]["data"]) == {"stream": "stdout", "text": TEXT.decode()}
    assert json.loads(logs[-1]["data"])["text"] == TEXT.decode()
    ends, at = [], 0
    for part in parts:
        at += len(part)
        ends.append(at)
    assert set(ends) <= {int(f["id"]) for f in logs}
    # the cut €: its pieces in base64, the rest of each chunk as text
    assert [f["event"] for f in logs[1:5]] == ["log", "log-b64", "log-b64", "log"]
    # binary costs a third more, not 81% (U+FFFD for each byte that is not UTF-8)
    binary_frames = [f for f in logs if f["event"] == "log-b64"]
    assert sum(len(f["data"]) for f in binary_frames) < len(BINARY) * 4 / 3 + 200
    assert len(body) < len(stored) * 4 / 3 + 2000

    # a resume anywhere, inside the cut character too, is exact
    start = len(TEXT)
    for at in (start + CUT - 1, start + CUT, start + CUT + 1, start + CUT + 2, start + 1000):
        _, frames = await sse(api, task["id"], at)
        assert output_of(frames) == stored[at:], at
    _, frames = await sse(api, task["id"], len(stored) - len(TEXT) - 777)
    assert output_of(frames) == stored[-len(TEXT) - 777 :]
