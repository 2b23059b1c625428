"""The web console against `egw dev`: a task on each simulated provider submitted from the
console's template for it, followed to its end with its output and upstream link, the health
strip showing every provider; and the task list's screenshot with all of them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import DOCS, Recorder

EXPECTED = {
    "local": "step 3",
    "nomad": "hello from nomad",
    "github_actions": "env=staging",
    "cloud_run": "hello from cloud run",
}


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dev")
    info = tmp / "info.json"
    args = ["dev", "--port", "0", "--info", str(info), "--time-scale", "0.05"]
    with (tmp / "dev.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "egw", *args], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while not info.exists() or not info.read_text().strip().endswith("}"):
            assert proc.poll() is None, (tmp / "dev.log").read_text()
            assert time.monotonic() < deadline, "egw dev did not start"
            time.sleep(0.05)
        yield json.loads(info.read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_task_on_each_simulated_provider_from_the_console(
    browser: Any, dev: dict[str, Any]
) -> None:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(20000)
    recorder = Recorder(pg)
    try:
        pg.goto(dev["gateway"] + "/")
        pg.fill("#token", dev["token"])
        pg.click("button:has-text('Sign in')")
        pg.wait_for_selector("[data-testid=live][data-state=live]")
        for provider in EXPECTED:
            pg.wait_for_selector(f".health .chip[data-provider='{provider}']")
        ids = {}
        for provider, expected in EXPECTED.items():
            pg.goto(f"{dev['gateway']}/ui/#/submit")
            pg.select_option("#f-provider", provider)
            pg.fill("#f-name", f"demo-{provider}")
            pg.click("form.submit button[type=submit]")
            pg.wait_for_url("**/#/task/t_*")
            ids[provider] = pg.url.rsplit("/", 1)[1]
            pg.wait_for_selector(f"[data-testid=log] .ln:has-text('{expected}')")
            pg.wait_for_selector(".task-head .badge[data-status='succeeded']")
            if provider != "local":  # the GitHub run, the Nomad job, the execution's logs
                link = pg.locator(".task-head a.upstream")
                assert link.get_attribute("href", timeout=5000).startswith("http")
                assert link.get_attribute("rel") == "noopener noreferrer"
            assert pg.locator("[data-testid=timeline] li").count() >= 3
        pg.goto(f"{dev['gateway']}/ui/#/tasks")
        for provider, task_id in ids.items():
            row = pg.locator(f"tr[data-task='{task_id}'][data-status='succeeded']")
            row.wait_for()
            assert provider in row.inner_text()
        pg.screenshot(path=str(DOCS / "console-dev.png"))
    finally:
        context.close()
    recorder.check((dev["token"],))
    assert Path(DOCS / "console-dev.png").stat().st_size > 0
