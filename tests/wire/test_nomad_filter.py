"""The event stream's pre-filter is exact: it never drops an event of a job egw tracks."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from egw.wire import nomad as wire

#: job ids as egw accepts them (wire/nomad/spec.py), a few of which are "egw's"
job_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True)
#: any text, ids included: the other fields, and ids that look almost like egw's
texts = st.one_of(job_ids, st.text(max_size=12), st.sampled_from(["", "ID", "JobID", '"', "\\"]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def events(draw: st.DrawFn, pool: list[str]) -> dict[str, Any]:
    topic = draw(st.sampled_from(["Job", "Allocation", "Evaluation", "Node", "Deployment"]))
    name = st.one_of(st.sampled_from(pool), texts)
    obj: dict[str, Any] = draw(st.dictionaries(texts, values, max_size=3))
    for key in ("ID", "JobID"):
        if draw(st.booleans()):
            obj[key] = draw(st.one_of(name, values))
    event: dict[str, Any] = {
        "Topic": topic,
        "Type": draw(st.sampled_from(["AllocationUpdated", "JobRegistered", "x"])),
        "Key": draw(st.one_of(name, values)),
        "Namespace": draw(st.sampled_from(["default", "", "ns1"])),
        "FilterKeys": draw(st.one_of(st.none(), st.lists(name, max_size=2))),
        "Index": draw(st.integers(0, 2**40)),
        "Payload": {topic: obj} if draw(st.integers(0, 9)) else draw(values),
    }
    for key in draw(st.lists(st.sampled_from(list(event)), max_size=2)):
        event.pop(key, None)  # any field may be missing
    return event


def encode(value: Any, spelled: frozenset[str]) -> str:
    """JSON as another encoder may write it: the characters in ``spelled`` of every string
    value written as ``\\u`` escapes (keys as they are, so the batch's head stays Nomad's)."""
    if isinstance(value, str):
        body = "".join(f"\\u{ord(c):04x}" if c in spelled else json.dumps(c)[1:-1] for c in value)
        return f'"{body}"'
    if isinstance(value, dict):
        items = (f"{json.dumps(k)}:{encode(v, spelled)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, spelled) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_no_event_of_a_tracked_job_is_ever_skipped(data: st.DataObject) -> None:
    pool = data.draw(st.lists(job_ids, min_size=1, max_size=4, unique=True))
    tracked = data.draw(st.sets(st.sampled_from(pool)))
    frame = {
        "Index": data.draw(st.integers(1, 2**62)),
        "Events": data.draw(st.lists(events(pool), max_size=4)),
    }
    style = data.draw(st.sampled_from(["orjson", "spaced", "ascii", "escaped"]))
    if style == "orjson":
        raw = orjson.dumps(frame)
    elif style == "spaced":
        raw = json.dumps(frame, indent=None, separators=(", ", " : "), ensure_ascii=False).encode()
    elif style == "ascii":
        raw = json.dumps(frame).encode()
    else:
        chars = sorted(set("".join(tracked))) or ["a"]  # spell characters of tracked ids
        spelled = data.draw(st.sets(st.sampled_from(chars), min_size=1, max_size=2))
        raw = encode(frame, frozenset(spelled)).encode()
    full = wire.parse_stream_line(raw)
    peeked = wire.peek_stream_line(raw, {t.encode() for t in tracked})
    assert peeked.index == full.index
    if any(ev.job_id in tracked for ev in full.events):
        assert peeked.events == full.events


def test_a_foreign_batch_is_skipped_and_ours_is_decoded() -> None:
    def line(job: str) -> bytes:
        event = {
            "Topic": "Allocation",
            "Type": "AllocationUpdated",
            "Key": "a1",
            "Namespace": "default",
            "FilterKeys": [job, ""],
            "Index": 7,
            "Payload": {"Allocation": {"ID": "a1", "JobID": job, "ClientStatus": "running"}},
        }
        return orjson.dumps({"Index": 7, "Events": [event]})

    mine = {b"egw-1"}
    assert wire.peek_stream_line(line("other"), mine) == wire.StreamLine(7)
    (ev,) = wire.peek_stream_line(line("egw-1"), mine).events
    assert ev.job_id == "egw-1"
    # a job id spelled with \u escapes is decoded, not skipped
    spelled = line("egw-1").replace(b"egw-1", b"\\u0065gw-1")
    assert wire.peek_stream_line(spelled, mine).events[0].job_id == "egw-1"
    # a heartbeat and a batch whose head is not Nomad's are decoded as before
    assert wire.peek_stream_line(b"{}", mine).heartbeat
    assert wire.peek_stream_line(b'{"Events":[],"Index":3}', mine).index == 3
