"""``egw circuits`` on a real `egw serve` whose Nomad is down: the breaker, open, with the
reason, then the move that opened it (``--events``), and the same as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cli_support import CLIGateway
from support import free_port


def test_circuits_shows_an_open_breaker_and_its_moves(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    circuit = {"failures": 2, "open_s": 600, "max_open_s": 600}
    nomad = {"enabled": True, "address": dead, "circuit": circuit}
    gw = CLIGateway(tmp_path, {"providers": {"nomad": nomad}})
    gw.start()
    try:
        deadline = time.monotonic() + 20  # the event stream's reconnects open it
        while time.monotonic() < deadline:
            table = gw.cli("circuits")
            if " open " in table.stdout:
                break
            time.sleep(0.1)
        assert table.returncode == 0, table.stderr
        header, row = table.stdout.splitlines()[:2]
        assert header.split()[:3] == ["PROVIDER", "TARGET", "STATE"]
        assert row.split()[:3] == ["nomad", "default", "open"]
        assert "Connect" in row  # the last failure: the connection was refused
        moves = gw.cli("circuits", "--events")
        assert "nomad default: closed -> open (2 failures, open 600s)" in moves.stdout
        data = json.loads(gw.cli("circuits", "--events", "--json").stdout)
        assert data["circuits"]["nomad"]["state"] == "open"
        assert data["circuits"]["nomad"]["retry_after_s"] > 500
        assert [e["kind"] for e in data["events"]] == ["circuit_open"]
    finally:
        gw.stop()
