"""`egw dev` picks its gateway port so that it can run beside `egw serve` on 8080."""

from __future__ import annotations

import socket

import pytest

from egw import devserver


def test_the_next_free_port_when_the_default_is_taken(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(devserver, "DEFAULT_PORTS", range(taken, taken + 20))
        port = devserver._gateway_port("127.0.0.1", None)
        assert taken < port < taken + 20
        assert f"port {taken} is taken, using {port}" in capsys.readouterr().err
        assert devserver._gateway_port("127.0.0.1", taken) == taken  # asked for: as asked
        assert devserver._gateway_port("127.0.0.1", 0) not in (0, taken)
