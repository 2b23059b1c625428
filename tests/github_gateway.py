"""A gateway with the GitHub Actions provider pointed at a `GitHubSimulator`, for the tests of
the watchdog and of cancels that say whether they worked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import make_config

from egw.testing.github import GitHubSimulator
from egw.web.app import create_app

SECRET = "e2e-webhook-secret"
TOKEN = "ghp_e2e"
BODY = {"provider": "github_actions", "task": {"workflow_id": "deploy.yml", "ref": "main"}}
Client = TestClient[web.Request, web.Application]


def simulator() -> GitHubSimulator:
    """Runs at 200x speed; a dispatched run appears after half a second."""
    return GitHubSimulator(
        webhook_secret=SECRET, token=TOKEN, time_scale=0.005, run_creation_delay_s=0.5
    )


async def github_gateway(
    tmp_path: Path, sim: GitHubSimulator, aiohttp_client: Callable[..., Any], **extra: Any
) -> Client:
    """The gateway (``extra``: more keys of its ``providers.github_actions`` section), with
    the simulator's webhooks pointed at it; reconciler polls far apart, so webhooks decide."""
    section = {
        "enabled": True,
        "api_url": sim.base_url,
        "token": TOKEN,
        "webhook_secret": SECRET,
        "owner": "octo-org",
        "repo": "octo-repo",
        "poll_min_s": 30,
        "poll_max_s": 60,
        **extra,
    }
    api: Client = await aiohttp_client(
        create_app(make_config(tmp_path, {"providers": {"github_actions": section}}))
    )
    sim.webhook_url = str(api.make_url("/v1/webhooks/github"))
    return api
