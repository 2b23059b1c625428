"""The web console in Chromium against a real `egw serve` (through a proxy that can drop
connections): sign-in, the live task list and its filters, a task's timeline and log, cancel,
re-run, submit, scopes, a wrong token, a dropped connection, a 50 MB log; and the screenshots
in docs/ (written again by each run)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import DOCS, Proxy, Recorder
from playwright.sync_api import expect
from support import READER_TOKEN, WRITER, WRITER_TOKEN, GatewayProcess

TOKENS = (WRITER_TOKEN, READER_TOKEN, "wrong-token-0000000")
WAIT_MS = 15000


def api(gw: GatewayProcess, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        gw.url + path,
        data=data,
        method=method,
        headers={**WRITER, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def submit(gw: GatewayProcess, script: str, **extra: Any) -> dict[str, Any]:
    body = {"provider": "local", "task": {"command": "sh", "args": ["-c", script]}, **extra}
    task: dict[str, Any] = api(gw, "POST", "/v1/tasks", body)
    return task


def wait_status(gw: GatewayProcess, task_id: str, *statuses: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = api(gw, "GET", f"/v1/tasks/{task_id}")
        if task["status"] in statuses:
            return task
        time.sleep(0.1)
    raise AssertionError(f"{task_id} never became {statuses}: {task}")


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Recorder]]:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    recorder = Recorder(pg)
    yield pg, recorder
    context.close()
    recorder.check(TOKENS)


def sign_in(pg: Any, url: str, token: str) -> None:
    pg.goto(f"{url}/")
    assert pg.url == f"{url}/ui/"  # / redirects to the console
    pg.fill("#token", token)
    pg.click("button:has-text('Sign in')")


def test_the_console_shows_tasks_live_with_filters_and_a_task_with_its_log(
    gateway: GatewayProcess, proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, _ = page
    sign_in(pg, proxy.url, WRITER_TOKEN)
    pg.wait_for_selector("[data-testid=live][data-state=live]")
    pg.wait_for_selector("[data-testid=whoami]:has-text('writer')")
    # a task submitted now appears by itself, and its status follows
    script = (
        "printf '\\033[32mgreen\\033[0m \\033[1;31mbold red\\033[0m\\n';"
        " for i in $(seq 1 5); do echo tick $i; echo warn $i >&2; sleep 0.2; done"
    )
    task = submit(gateway, script, name="console-demo", labels={"team": "web"})
    row = pg.locator(f"tr[data-task='{task['id']}']")
    row.wait_for()
    pg.wait_for_selector(f"tr[data-task='{task['id']}'][data-status='succeeded']")
    assert "team=web" in row.inner_text() and "local" in row.inner_text()
    other = submit(gateway, "exit 3", name="another", labels={"team": "ops"})
    pg.wait_for_selector(f"tr[data-task='{other['id']}'][data-status='failed']")
    assert pg.locator(f"tr[data-task='{other['id']}'] td").nth(6).inner_text() == "3"

    # filters: by label, by name, by status (each in the URL after #, never the token)
    pg.fill("input[name=label]", "team=web")
    pg.click("text=Filter")
    expect(pg.locator(f"tr[data-task='{task['id']}']")).to_have_count(1)
    expect(pg.locator(f"tr[data-task='{other['id']}']")).to_have_count(0)
    pg.fill("input[name=label]", "")
    pg.fill("input[name=name]", "anoth")
    pg.click("text=Filter")
    expect(pg.locator(f"tr[data-task='{other['id']}']")).to_have_count(1)
    expect(pg.locator(f"tr[data-task='{task['id']}']")).to_have_count(0)
    pg.goto(f"{proxy.url}/ui/#/tasks?status=failed")
    pg.wait_for_selector(f"tr[data-task='{other['id']}']")
    expect(pg.locator(f"tr[data-task='{task['id']}']")).to_have_count(0)
    pg.goto(f"{proxy.url}/ui/#/tasks")
    pg.wait_for_selector(f"tr[data-task='{task['id']}']")
    pg.screenshot(path=str(DOCS / "console-tasks.png"))

    # the task's page: header, timeline, log with colours; the stream filter
    pg.click(f"tr[data-task='{task['id']}'] a")
    pg.wait_for_selector(".task-head h1:has-text('console-demo')")
    pg.wait_for_selector("[data-testid=log] .ln:has-text('tick 5')")
    pg.wait_for_selector("[data-testid=timeline] li[data-kind]")
    kinds = pg.locator("[data-testid=timeline] li").evaluate_all("l => l.map(e => e.dataset.kind)")
    assert kinds[0] == "submitted" and len(kinds) >= 3, kinds
    assert pg.locator("[data-testid=log] .f2:has-text('green')").count() == 1
    assert pg.locator("[data-testid=log] .f1.ab:has-text('bold red')").count() == 1
    lines = pg.locator("[data-testid=log] .ln").all_inner_texts()
    assert "warn 3" in lines and "tick 3" in lines
    pg.screenshot(path=str(DOCS / "console-task.png"))
    pg.select_option("select[aria-label=stream]", "stderr")
    expect(pg.locator("[data-testid=log] .ln", has_text=re.compile("^tick"))).to_have_count(0)
    pg.wait_for_selector("[data-testid=log] .ln:has-text('warn 5')")
    # download: the whole log as a file
    with pg.expect_download() as download:
        pg.click("text=Download")
    assert download.value.suggested_filename == f"{task['id']}.stderr.log"
    assert Path(download.value.path()).read_text() == "".join(f"warn {i}\n" for i in range(1, 6))


def test_cancel_force_cancel_and_rerun_each_confirmed(
    gateway: GatewayProcess, proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, _ = page
    sign_in(pg, proxy.url, WRITER_TOKEN)
    task = submit(gateway, "echo started; sleep 60", name="long-one")
    wait_status(gateway, task["id"], "running")
    pg.goto(f"{proxy.url}/ui/#/task/{task['id']}")
    pg.wait_for_selector("[data-testid=log] .ln:has-text('started')")
    # going back from the dialog does nothing
    pg.click(".actions button:text-is('Cancel')")
    pg.click("[data-testid=confirm] button:text-is('Back')")
    time.sleep(0.3)
    assert api(gateway, "GET", f"/v1/tasks/{task['id']}")["status"] == "running"
    pg.click(".actions button:text-is('Cancel')")
    pg.click("[data-testid=confirm] button:text-is('Cancel task')")
    pg.wait_for_selector(".task-head .badge[data-status='cancelled']")
    pg.wait_for_selector("[data-testid=timeline] li[data-kind='cancel_requested']")
    expect(pg.locator(".actions button:text-is('Cancel')")).to_have_count(0)
    # re-run: a new task with the same spec, and the console goes to it
    pg.click(".actions button:text-is('Re-run')")
    pg.click("[data-testid=confirm] button:text-is('Re-run')")
    pg.wait_for_url(re.compile(r"#/task/(?!" + task["id"] + ")t_[0-9a-f]{32}$"))
    rerun_id = pg.url.rsplit("/", 1)[1]
    pg.wait_for_selector("[data-testid=log] .ln:has-text('started')")
    assert api(gateway, "GET", f"/v1/tasks/{rerun_id}")["name"] == "long-one"
    # force cancel: ended at once
    pg.click(".actions button:text-is('Force cancel')")
    pg.click("[data-testid=confirm] button:text-is('Force cancel')")
    pg.wait_for_selector(".task-head .badge[data-status='cancelled']")
    assert api(gateway, "GET", f"/v1/tasks/{rerun_id}")["status"] == "cancelled"


def test_submit_shows_the_apis_errors_next_to_their_fields_then_submits(
    gateway: GatewayProcess, proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, _ = page
    sign_in(pg, proxy.url, WRITER_TOKEN)
    pg.click("nav a:text-is('Submit')")
    pg.wait_for_selector("form.submit")
    assert json.loads(pg.input_value("#f-task"))["command"] == "sh"  # the local template
    # a timeout out of range: the API's error is shown under timeout_s
    pg.fill("#f-task", json.dumps({"command": "echo", "args": "not-a-list"}))
    pg.fill("#f-timeout_s", "-5")
    pg.click("form.submit button[type=submit]")
    expect(pg.locator(".field-error[data-field=timeout_s]")).to_contain_text("timeout_s")
    expect(pg.locator("#f-timeout_s.invalid")).to_have_count(1)
    # then the task the local runner refuses: under the task field, with the field's path
    pg.fill("#f-timeout_s", "30")
    pg.click("form.submit button[type=submit]")
    error = pg.locator(".field-error[data-field=task]")
    expect(error).to_contain_text("task.args must be a list of strings")
    expect(pg.locator(".field-error[data-field=timeout_s]")).to_have_text("")
    # JSON that does not parse is caught before sending
    pg.fill("#f-task", "{nope")
    pg.click("form.submit button[type=submit]")
    expect(error).to_contain_text("not valid JSON")
    pg.fill("#f-task", json.dumps({"command": "echo", "args": ["from the console"]}))
    # a bad label name, from the API too
    pg.fill("#f-labels", "bad name=x")
    pg.click("form.submit button[type=submit]")
    expect(pg.locator(".field-error[data-field=labels]")).to_contain_text("label")
    pg.screenshot(path=str(DOCS / "console-submit.png"))  # an error next to its field
    pg.fill("#f-labels", "team=web, env=dev")
    pg.fill("#f-name", "from-the-form")
    pg.fill("#f-idempotency_key", "console-key-1")
    pg.click("form.submit button[type=submit]")
    pg.wait_for_url(re.compile(r"#/task/t_[0-9a-f]{32}$"))
    task_id = pg.url.rsplit("/", 1)[1]
    pg.wait_for_selector("[data-testid=log] .ln:has-text('from the console')")
    task = api(gateway, "GET", f"/v1/tasks/{task_id}")
    assert task["labels"] == {"team": "web", "env": "dev"} and task["timeout_s"] == 30
    assert task["name"] == "from-the-form"
    # the same key and body again is the same task (Idempotency-Key was sent)
    pg.goto(f"{proxy.url}/ui/#/submit")
    pg.fill("#f-task", json.dumps({"command": "echo", "args": ["from the console"]}))
    pg.fill("#f-name", "from-the-form")
    pg.fill("#f-labels", "team=web, env=dev")
    pg.fill("#f-timeout_s", "30")
    pg.fill("#f-idempotency_key", "console-key-1")
    pg.click("form.submit button[type=submit]")
    pg.wait_for_url(re.compile(f"#/task/{task_id}$"))


def test_a_read_only_token_sees_no_buttons_and_a_wrong_token_is_refused(
    gateway: GatewayProcess, proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, recorder = page
    task = submit(gateway, "sleep 30", name="watched")
    wait_status(gateway, task["id"], "running")
    sign_in(pg, proxy.url, "wrong-token-0000000")
    expect(pg.locator("#signin-error")).to_contain_text("invalid bearer token")
    assert pg.evaluate("sessionStorage.length") == 0  # a refused token is not kept
    pg.fill("#token", READER_TOKEN)
    pg.click("button:has-text('Sign in')")
    pg.wait_for_selector("[data-testid=whoami]:has-text('reader')")
    pg.wait_for_selector(f"tr[data-task='{task['id']}']")
    assert pg.locator("nav a:text-is('Submit')").is_hidden()
    pg.click(f"tr[data-task='{task['id']}'] a")
    pg.wait_for_selector(".task-head .badge[data-status='running']")
    pg.wait_for_selector("[data-testid=timeline] li")
    assert pg.locator(".actions button").count() == 0
    # the token never went into a URL, and no cookie was set
    assert pg.context.cookies() == []
    chip = pg.locator(".health .chip[data-provider='local']")
    expect(chip).to_contain_text(re.compile(r"[1-9]\d* running"))
    api(gateway, "POST", f"/v1/tasks/{task['id']}/cancel")
    # the page follows the cancel live, still without buttons
    pg.wait_for_selector(".task-head .badge[data-status='cancelled']")
    assert pg.locator(".actions button").count() == 0
    # and the health strip, refreshed, shows the runner idle again
    expect(chip).to_contain_text("0 running", timeout=12000)
    # sign out: the token is forgotten
    pg.click("button:has-text('Sign out')")
    pg.wait_for_selector("#token")
    assert pg.evaluate("sessionStorage.length") == 0
    assert any("/v1/whoami" in u for u in recorder.urls)


def test_a_dropped_connection_resumes_without_a_gap_or_a_duplicate_line(
    gateway: GatewayProcess, proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, recorder = page
    sign_in(pg, proxy.url, WRITER_TOKEN)
    pg.wait_for_selector("[data-testid=live][data-state=live]")
    task = submit(gateway, "for i in $(seq 1 80); do echo line-$i; sleep 0.04; done")
    pg.goto(f"{proxy.url}/ui/#/task/{task['id']}")
    pg.wait_for_selector("[data-testid=log] .ln:has-text('line-10')")
    proxy.drop()  # every connection through the proxy: the log's stream, the events' too
    time.sleep(0.3)
    proxy.drop()
    pg.wait_for_selector("[data-testid=log] .ln:text-is('line-80')", timeout=20000)
    pg.wait_for_selector(".task-head .badge[data-status='succeeded']")
    lines = pg.locator("[data-testid=log] .ln").all_inner_texts()
    assert lines == [f"line-{i}" for i in range(1, 81)]
    assert proxy.drops == 2
    # the log's stream was opened again, from the last offset it had (Last-Event-ID)
    tails = [int(last or 0) for url, last in recorder.resumes if url.endswith("/logs")]
    assert len(tails) >= 2 and tails[1] >= tails[0] >= 0, tails


def number(line: Any) -> int:
    return int(line.inner_text().split()[1])


def scroll_until(pg: Any, log: Any, top: str, done: Any, bound: int) -> list[int]:
    """Scroll the log to ``top`` (a JS expression of the pane ``e``) until ``done(n)`` holds
    for the number of the last whole line ``n``; each step, the DOM holds at most ``bound``
    lines. Returns the numbers seen."""
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while True:
        log.evaluate(f"e => {{ e.scrollTop = {top}; }}")
        pg.wait_for_timeout(50)
        assert log.locator(".ln").count() <= bound
        seen.append(number(log.locator(".ln").nth(-2)))  # the last line may be cut short
        if done(seen[-1]):
            return seen
        assert time.monotonic() < deadline, seen[-5:]


def test_a_50_mb_log_scrolls_in_a_window_of_bounded_size(
    gateway: GatewayProcess, proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, _ = page
    task = submit(
        gateway,
        "printf '\\033[36mcyan header\\033[0m\\n'; seq -f 'line %08.0f' 1 3700000",
        name="big-log",
    )
    done = wait_status(gateway, task["id"], "succeeded", timeout=60)
    assert done["status"] == "succeeded"
    sign_in(pg, proxy.url, WRITER_TOKEN)
    pg.goto(f"{proxy.url}/ui/#/task/{task['id']}")
    log = pg.locator("[data-testid=log]")
    pg.wait_for_selector("[data-testid=log] .ln:text-is('line 03700000')")
    bound = 4 * 16 * 1024 // 14 + 8  # at most four 16 KiB blocks of 14-byte lines
    assert log.locator(".ln").count() <= bound
    # to the start, then scroll down through several windows
    follow = pg.locator(".log-tools input[type=checkbox]")
    assert follow.is_checked()
    pg.click("button:text-is('Start')")
    pg.wait_for_selector("[data-testid=log] .ln:has-text('cyan header')")
    assert not follow.is_checked()  # away from the end: paused
    assert log.locator(".f6").count() == 1
    # scroll down through many windows: the DOM stays bounded, the lines go on in order
    seen = scroll_until(pg, log, "e.scrollHeight", lambda n: n > 20_000, bound)
    assert seen == sorted(seen) and seen[-1] > 20_000
    first = number(log.locator(".ln").nth(1))
    assert first > 10_000  # the first lines left the DOM
    # and back up: earlier lines come back, still bounded
    scroll_until(pg, log, "0", lambda _: number(log.locator(".ln").nth(1)) < first - 2000, bound)
    # the slider jumps to the middle; the lines there are whole and in order
    pg.locator(".log-slider").evaluate(
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('change')); }",
        (12 + 14 * 3_700_000) // 2,
    )
    middle = 3_700_000 // 2
    pg.wait_for_selector(f"[data-testid=log] .ln:text-is('line {middle:08d}')")
    texts = log.locator(".ln").all_inner_texts()
    numbers = [int(t.split()[1]) for t in texts[1:-1]]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    pg.click("button:text-is('Jump to end')")
    pg.wait_for_selector("[data-testid=log] .ln:text-is('line 03700000')")
    assert follow.is_checked()
    assert log.locator(".ln").count() <= bound


def test_paging_and_fields_statuses_and_health_the_console_does_not_know_yet(
    gateway: GatewayProcess, proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, _ = page
    ids = [submit(gateway, "true", labels={"batch": "paging"})["id"] for _ in range(27)]
    sign_in(pg, proxy.url, WRITER_TOKEN)
    pg.goto(f"{proxy.url}/ui/#/tasks?label=batch%3Dpaging")
    rows = pg.locator("tbody tr[data-task]")
    expect(rows).to_have_count(25)
    assert rows.first.get_attribute("data-task") == ids[-1]  # newest first
    pg.click("button:has-text('Older')")
    expect(rows).to_have_count(2)
    assert rows.evaluate_all("r => r.map(e => e.dataset.task)") == ids[1::-1]
    pg.click("button:has-text('Newer')")
    expect(rows).to_have_count(25)
    # what other gateways may send: a status, a flag, a field, a circuit it does not know
    rendered = pg.evaluate(
        """async () => {
        const u = await import('/ui/util.js');
        const h = await import('/ui/health.js');
        const t = await import('/ui/task.js');
        const ev = (kind, applied) => t.eventRow({seq: 1, kind, applied, status: 'running',
            prev_status: 'running', at: '2026-01-01T00:00:00Z', data: {attempt: 2}});
        const task = {status: 'cancel_failed', reason: 'upstream refused', namespace: 'ci',
                      stuck: {reason: 'no report for 10m', since: '2026-01-01T00:00:00Z'}};
        return {
          unknown: u.badge('hibernating').className,
          known: u.badge('cancel_failed').className,
          flags: u.flags(task).map(f => f.className + ':' + f.textContent),
          open: h.facts({circuit: {state: 'open', failures: 5}}),
          closed: h.facts({circuit: {state: 'closed', failures: 0}}),
          half: h.facts({circuit: {state: 'half_open'}, running: 1, queued: 0}),
          stale: ev('observed', false).className,
          upstream: ev('upstream', false).className,
          moved: ev('stuck', true).textContent,
          budget: h.facts({logging_reads_per_minute: 30, logging_reads_last_minute: {p: 30}}),
        };
    }"""
    )
    assert rendered["unknown"] == "badge s-other"
    assert rendered["known"] == "badge s-cancel_failed"
    assert rendered["flags"] == [
        "flag flag-stuck:stuck",
        "flag flag-cancel-failed:cancel failed",
    ]
    assert rendered["open"] == {"text": "circuit open", "level": "bad"}
    assert rendered["closed"] == {"text": "", "level": "ok"}  # the usual case says nothing
    assert rendered["half"] == {"text": "circuit half open · 1 running, 0 queued", "level": "warn"}
    assert rendered["stale"] == "ev stale"  # a report older than what egw knows: greyed
    assert rendered["upstream"] == "ev"  # not a report: an upstream id recorded
    assert "stuck" in rendered["moved"] and "attempt=2" in rendered["moved"]
    assert rendered["budget"] == {"text": "log reads left 0/30 a minute", "level": "warn"}


def test_the_sse_parser_follows_the_whatwg_rules_across_any_cut(
    proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    pg, _ = page
    pg.goto(f"{proxy.url}/ui/")
    stream = (
        'retry: 1000\r\n\r\n: keepalive\n\nid: 7\nevent: log\ndata: {"a":1}\r\n\r\n'
        "data: two\ndata: lines\n\nid\nevent: end\ndata:x\r\rdata: after an id reset\n\n"
    )
    frames = pg.evaluate(
        """async (text) => {
        const {SSEParser} = await import('/ui/api.js');
        const runs = [];
        for (let cut = 1; cut <= 7; cut++) {  // every chunking of the same bytes
          const got = [];
          const p = new SSEParser((f) => got.push(f));
          for (let i = 0; i < text.length; i += cut) p.push(text.slice(i, i + cut));
          runs.push(JSON.stringify(got));
        }
        return runs;
    }""",
        stream,
    )
    assert len(set(frames)) == 1, frames
    assert json.loads(frames[0]) == [
        {"event": "log", "data": '{"a":1}', "id": "7"},
        {"event": "message", "data": "two\nlines", "id": "7"},
        {"event": "end", "data": "x", "id": ""},
        {"event": "message", "data": "after an id reset", "id": ""},
    ]


def test_the_content_security_policy_holds_in_the_browser(
    proxy: Proxy, page: tuple[Any, Recorder]
) -> None:
    """An inline script and an inline style, as an injection would add them, are refused."""
    pg, recorder = page
    pg.goto(f"{proxy.url}/ui/")
    pg.wait_for_selector("#token")
    refused = pg.evaluate(
        """() => new Promise((resolve) => {
        const seen = [];
        document.addEventListener('securitypolicyviolation', (e) => {
          seen.push(e.effectiveDirective);
          if (seen.length === 2) resolve(seen.sort());
        });
        const s = document.createElement('script');
        s.textContent = 'window.injected = true';
        document.body.appendChild(s);
        const d = document.createElement('div');
        d.setAttribute('style', 'color: red');
        document.body.appendChild(d);
    })"""
    )
    assert refused == ["script-src-elem", "style-src-attr"]
    assert pg.evaluate("window.injected === undefined")
    # the two refusals were the only console errors; the recorder checks there are no others
    expected = [m for m in recorder.console if "Content Security Policy" in m]
    assert len(expected) == 2, recorder.console
    for m in expected:
        recorder.console.remove(m)
