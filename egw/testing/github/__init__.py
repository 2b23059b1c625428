"""A GitHub Actions simulator: the Actions REST operations and signed webhooks over real HTTP.

Used by egw's tests and by ``egw dev``. It speaks the operations of the contract
``rest-actions.openapi.json`` (paths, ``basic-error`` bodies, ``Link`` paging,
``ETag``/``If-None-Match`` with free 304s, ``x-ratelimit-*`` headers, 302 log
redirects) and delivers ``workflow_run``/``workflow_job``/``ping`` webhooks the
way GitHub does (``X-GitHub-Event``, ``X-GitHub-Delivery``, ``X-GitHub-Hook-ID``,
``X-Hub-Signature-256``, ``User-Agent: GitHub-Hookshot/...``).

Start it::

    sim = GitHubSimulator(webhook_url="http://127.0.0.1:8080/v1/webhooks/github",
                          webhook_secret="s3cret", token="t0ken", time_scale=0.01)
    base_url = await sim.start()          # use as providers.github_actions.api_url
    ...
    await sim.close()

Any ``owner/repo`` exists; any workflow file name is accepted unless
``strict_workflows=True`` (then only those added with `add_workflow`). When
nothing is scripted, a dispatched run has one job ``run`` whose steps log
``Set up job``, the inputs as one line (``env=prod``), ``Complete job``, and
succeed after about two simulated seconds.

Time
    ``time_scale`` real seconds per simulated second: with 0.01 a 10 s step takes
    0.1 s. Timestamps in payloads follow the simulated clock.

Scripting runs
    ``sim.script(RunScript(jobs=[JobScript("build", steps=[StepScript("Test", 5,
    conclusion="failure", output="1 failed")])]))`` queues the script for the next
    dispatch. `RunScript`: ``queue_s`` (time in ``queued``), ``conclusion`` (force
    ``startup_failure``, ``timed_out``, ``neutral``...), ``cancel_conflict`` (cancel
    answers 409 with that message, like runs stuck in queued), ``action_required``
    (requested already ``completed``/``action_required``; nothing runs), ``pending_s``
    (``pending`` before ``queued``, as held by a concurrency group). `JobScript`:
    ``always=True`` keeps a job running through a normal cancel (``if: always()``);
    force-cancel stops it; ``log_delay_s`` holds its log back after it completed (the
    runner uploads it last). A job's ``.../logs`` answers 302 whatever its state; the
    download answers Azure's 404 ``BlobNotFound`` XML until the log is there. Log lines
    carry the runner's timestamps (seven fractional digits) after a byte order mark.
    ``environment="production"`` makes a job wait for that environment's review (queued
    ``waiting`` with a ``deployment``, then ``waiting``; the run is ``waiting``) until
    ``sim.approve(run_id)`` or ``approval_s``.
    `StepScript`: ``duration_s``, ``conclusion``, ``output``
    (the step's log lines). A failed step skips the rest of its job.
    ``sim.add_workflow(owner, repo, "deploy.yml", inputs=["env"], run_name="deploy
    ${{ inputs.egw_id }}")`` declares inputs (others get 422 "Unexpected inputs")
    and a run-name template. ``await sim.rerun(run_id)`` starts attempt + 1.

Dispatch answers
    ``return_run_details: true`` (2022-11-28) or ``X-GitHub-Api-Version: 2026-03-10``:
    200 with ``workflow_run_id``/``run_url``/``html_url``; otherwise 204 and the run
    appears ``run_creation_delay_s`` (simulated) later. ``enterprise=True`` plays an
    older Enterprise Server: ``return_run_details`` is rejected with
    ``enterprise_status`` (422 or 400) naming the field, and 2026-03-10 is unknown.

Faults
    ``fail_next(status, match="/dispatches", retry_after=..., message=...)`` (403/429
    without a message are secondary rate limits); ``drop_connection_next(match=...,
    after_effect=True)`` closes the connection after doing the work (an ambiguous
    failure); ``slow_next(seconds)``; ``set_rate_limit(remaining=0, reset_in_s=2)``
    (primary limit: 403 until the reset).

GitHub App
    ``github_app=SimApp(app_id="12345", installation_id=42, public_key=key.public_key(),
    token_lifetime_s=2)``: ``POST /app/installations/{id}/access_tokens`` checks the app's
    JWT and issues expiring installation tokens, accepted besides ``token``
    (`egw.testing.github.apps`); ``sim.github_app.revoke_tokens()``; ``.issued``.

Webhooks
    ``webhook_content_type="form"`` plays a hook left at GitHub's default content type:
    ``application/x-www-form-urlencoded``, ``payload=<the JSON>``.
    Every delivery is recorded in ``sim.deliveries`` (`SentDelivery`: ``guid``,
    ``event``, ``action``, ``body``, ``headers``, the receiver's ``answers``).
    ``drop(event=, action=, count=)``, ``delay(seconds, event=, action=)`` (later
    deliveries overtake it), ``hold()`` then ``release(order="reverse" | [guids])``,
    ``redeliver(guid)`` (same GUID and body), ``await ping()``. ``await
    sim.deliveries_idle()`` waits until everything queued was sent;
    ``await sim.wait_run(run_id, "completed")`` waits for a run.
"""

from egw.testing.github.apps import SimApp
from egw.testing.github.hooks import SentDelivery
from egw.testing.github.runs import JobScript, RunScript, SimClock, StepScript
from egw.testing.github.server import GitHubSimulator

__all__ = [
    "GitHubSimulator",
    "JobScript",
    "RunScript",
    "SentDelivery",
    "SimApp",
    "SimClock",
    "StepScript",
]
