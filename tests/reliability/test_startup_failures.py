"""A database that can't be written stops `egw serve` at once, with one line (issue 11,
point 8), with real processes: no traceback, no hang, a non-zero exit a supervisor can
act on, and nothing of the unfinished tasks touched.

How a failing write is made for root: the suite runs as root, and root ignores file
permission bits (chmod 0444 changes nothing), and a read-only bind mount needs
privileges a test should not use. What does stop root:
- the immutable attribute (``chattr +i``, which the kernel enforces for everyone):
  SQLite then opens the file read-only and refuses the first write, the scenario of
  the issue. ext4, xfs, btrfs and tmpfs (Linux 6.0+) support it, overlayfs when its
  upper layer does; where ``chattr`` is missing or the filesystem or the capabilities
  refuse it, those tests are skipped, saying why;
- a path through a regular file (``some-file/egw.db``): a directory that can't be
  created, on any filesystem, so that case always runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import WRITER, GatewayProcess, config_dict, free_port


def serve(config: Path, timeout: float = 15) -> tuple[int, str, str, float]:
    """`egw serve` until it exits (killed, and the test failed, if it takes ``timeout``)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egw", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"egw serve did not exit within {timeout}s: {out[-2000:]} {err[-2000:]}")
    return proc.returncode, out, err, time.monotonic() - started


def one_line(rc: int, out: str, err: str, *fragments: str) -> None:
    assert rc == 1, (rc, out, err)
    assert "Traceback" not in out + err
    assert err.count("\n") == 1 and err.startswith("egw: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert "listening" not in err


def write_config(tmp_path: Path, db: Path) -> Path:
    config = tmp_path / "serve.yaml"
    cfg = config_dict(tmp_path, {"storage": {"path": str(db)}, "server": {"port": free_port()}})
    config.write_text(yaml.safe_dump(cfg))
    return config


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i path`` for the block, or skip the test with the reason it can't be."""
    if shutil.which("chattr") is None or shutil.which("lsattr") is None:
        pytest.skip("chattr/lsattr are not installed")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this filesystem or user can't set the immutable attribute: {made.stderr}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def unfinished_task(tmp_path: Path) -> tuple[str, int]:
    """A database holding a `running` local task whose gateway was killed -9 (and whose
    process is then gone too): the state the next start-up must deal with."""
    gw = GatewayProcess(tmp_path)
    gw.start()
    try:
        body = json.dumps({"provider": "local", "task": {"command": "sleep", "args": ["60"]}})
        req = urllib.request.Request(
            f"{gw.url}/v1/tasks",
            data=body.encode(),
            headers={**WRITER, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=15) as resp:
            task = json.loads(resp.read())
        assert task["status"] == "running"
    finally:
        gw.kill()
    pid = int(task["upstream"]["id"])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the local runner starts each task in its own group
    return task["id"], pid


def status_in_database(db: Path, task_id: str) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    finally:
        conn.close()
    return str(row[0])


def test_an_immutable_database_with_an_unfinished_task_exits_with_one_line(
    tmp_path: Path,
) -> None:
    db = tmp_path / "egw.db"
    task_id, _ = unfinished_task(tmp_path)
    with immutable(db):
        rc, out, err, took = serve(write_config(tmp_path, db))
    one_line(rc, out, err, str(db), "readonly database")
    assert took < 10
    # the start-up failed before any provider ran: the task was not touched
    assert status_in_database(db, task_id) == "running"
    assert "leftover" not in out


@pytest.mark.sqlite_only(reason="the database file's directory")
def test_a_directory_that_cannot_be_created_exits_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    rc, out, err, _ = serve(write_config(tmp_path, blocker / "data" / "egw.db"))
    one_line(rc, out, err, f"cannot create the directory {blocker / 'data'}: Not a directory")


@pytest.mark.sqlite_only(reason="the database file's directory")
def test_a_read_only_directory_exits_with_one_line(tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    with immutable(parent):
        rc, out, err, _ = serve(write_config(tmp_path, parent / "data" / "egw.db"))
    one_line(rc, out, err, f"cannot create the directory {parent / 'data'}")


@pytest.mark.sqlite_only(reason="holds the start-up with SQLite's file lock")
def test_sigterm_during_start_up_stops_it(tmp_path: Path) -> None:
    """Another program holds the database's write lock: the start-up waits for SQLite (its
    busy timeout is 5 s). SIGTERM in that wait ends the process cleanly, without a line
    of error, and the database's lock is free again afterwards."""
    db = tmp_path / "egw.db"
    config = write_config(tmp_path, db)
    ready = subprocess.run(
        [sys.executable, "-m", "egw", "migrate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert ready.returncode == 0, ready
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "egw", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _locked_by(tmp_path / "egw.db.lock", proc.pid):
            time.sleep(0.05)
        time.sleep(0.3)  # into the start-up, waiting for SQLite
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"SIGTERM did not stop the start-up: {out[-2000:]} {err[-2000:]}")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in out + err
    assert "listening" not in err
    assert (tmp_path / "egw.db.lock").read_text() == ""


def _locked_by(lock: Path, pid: int) -> bool:
    try:
        return lock.read_text() == f"{pid}\n"
    except FileNotFoundError:
        return False
