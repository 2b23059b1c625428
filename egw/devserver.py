"""`egw dev`: the gateway and simulators of Nomad, GitHub Actions and Cloud Run, on loopback.

Everything runs in one process and one event loop: the three simulators from
`egw.testing`, then the gateway with every provider pointed at them and
GitHub's webhooks wired back to it. The database is temporary unless
``--db`` names a file. A new user can submit to all four providers, follow
logs and cancel within a minute, with no accounts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from aiohttp import web

from egw.config import Config, parse_config

GITHUB_OWNER, GITHUB_REPO = "egw-dev", "demo"
GCP_PROJECT, GCP_REGION, GCP_JOB = "egw-dev", "us-central1", "hello"


def add_dev_parser(sub: Any) -> None:
    dev = sub.add_parser("dev", help="run the gateway with every backend simulated (no accounts)")
    dev.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    dev.add_argument(
        "--port",
        type=int,
        help="gateway port (default: 8080, or the next free one when `egw serve` has it;"
        " 0: any free port)",
    )
    dev.add_argument("--db", help="keep the database in this file (default: a temporary one)")
    dev.add_argument("--info", help="write addresses, token and webhook secret here as JSON")
    dev.add_argument(
        "--time-scale",
        type=float,
        default=0.2,
        help="real seconds per simulated second in the simulators (default 0.2)",
    )
    dev.set_defaults(run=run_dev)


def run_dev(args: argparse.Namespace) -> int:
    from egw.logconfig import configure_logging

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("egw dev: listens on loopback only", file=sys.stderr)
        return 2
    configure_logging(level="warning", fmt="console")
    try:
        asyncio.run(_dev(args))
    except KeyboardInterrupt:
        pass
    return 0


def dev_config(
    *,
    host: str,
    port: int,
    db: str,
    token: str,
    team_tokens: tuple[str, str],
    nomad_url: str,
    github_url: str,
    github_token: str,
    webhook_secret: str,
    cloudrun_url: str,
    cloudrun_token: str,
) -> Config:
    return parse_config(
        {
            "server": {"host": host, "port": port},
            "auth": {
                "tokens": [
                    {
                        "name": "dev",
                        "token": token,
                        "scopes": ["tasks:read", "tasks:write", "admin"],
                        "namespaces": "*",
                    },
                    # one token per team, each seeing and running only its own namespace
                    {"name": "team-a", "token": team_tokens[0], "namespaces": ["team-a"]},
                    {"name": "team-b", "token": team_tokens[1], "namespaces": ["team-b"]},
                ]
            },
            # team-a dispatches the repository's workflows and runs Nomad jobs in its own
            # Nomad namespace, but not on the local runner; team-b runs the Cloud Run job and
            # Nomad jobs in its namespace
            "namespaces": {
                "team-a": {
                    "providers": {
                        "github_actions": {"repositories": [f"{GITHUB_OWNER}/{GITHUB_REPO}"]},
                        "nomad": {"namespaces": ["team-a"]},
                    }
                },
                "team-b": {
                    "providers": {
                        "cloud_run": {"projects": [GCP_PROJECT], "jobs": [GCP_JOB]},
                        "nomad": {"namespaces": ["team-b"]},
                    }
                },
            },
            "retry": {
                "attempts": 4,
                "initial_backoff_s": 0.2,
                "max_backoff_s": 2,
                "deadline_s": 20,
            },
            "storage": {"path": db},
            "providers": {
                "local": {"enabled": True},
                "nomad": {"enabled": True, "address": nomad_url},
                "github_actions": {
                    "enabled": True,
                    "api_url": github_url,
                    "token": github_token,
                    "webhook_secret": webhook_secret,
                    "owner": GITHUB_OWNER,
                    "repo": GITHUB_REPO,
                },
                "cloud_run": {
                    "enabled": True,
                    "run_api_url": cloudrun_url,
                    "logging_api_url": cloudrun_url,
                    "access_token": cloudrun_token,
                    "project": GCP_PROJECT,
                    "region": GCP_REGION,
                    "poll_min_s": 0.5,
                },
            },
        },
        {},
    )


async def _dev(args: argparse.Namespace) -> None:
    from egw.testing.cloudrun import CloudRunSimulator
    from egw.testing.github import GitHubSimulator
    from egw.testing.nomad import NomadSimulator
    from egw.web.app import create_app

    port = _gateway_port(args.host, args.port)
    gateway_url = f"http://{args.host}:{port}"
    token = secrets.token_urlsafe(24)
    team_tokens = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    webhook_secret = secrets.token_hex(16)
    github_token = "ghp_dev_" + secrets.token_hex(12)
    cloudrun_token = "ya29.dev-" + secrets.token_hex(12)
    scale = args.time_scale

    async with AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="egw-dev-"))
        db = args.db or str(Path(tmp) / "egw.db")

        nomad = NomadSimulator(time_scale=scale)
        nomad_url = await nomad.start(host=args.host)
        stack.push_async_callback(nomad.close)
        github = GitHubSimulator(
            webhook_url=f"{gateway_url}/v1/webhooks/github",
            webhook_secret=webhook_secret,
            token=github_token,
            time_scale=scale,
        )
        github_url = await github.start(host=args.host)
        stack.push_async_callback(github.close)
        cloudrun = CloudRunSimulator(token=cloudrun_token, time_scale=scale)
        cloudrun.add_job(GCP_PROJECT, GCP_REGION, GCP_JOB)
        cloudrun_url = await cloudrun.start(host=args.host)
        stack.push_async_callback(cloudrun.close)

        cfg = dev_config(
            host=args.host,
            port=port,
            db=db,
            token=token,
            team_tokens=team_tokens,
            nomad_url=nomad_url,
            github_url=github_url,
            github_token=github_token,
            webhook_secret=webhook_secret,
            cloudrun_url=cloudrun_url,
            cloudrun_token=cloudrun_token,
        )
        runner = web.AppRunner(create_app(cfg), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, args.host, port).start()

        info = {
            "gateway": gateway_url,
            "token": token,
            "team_a_token": team_tokens[0],
            "team_b_token": team_tokens[1],
            "database": db,
            "nomad": nomad_url,
            "github": github_url,
            "github_webhook_secret": webhook_secret,
            "github_repository": f"{GITHUB_OWNER}/{GITHUB_REPO}",
            # what the simulators take as credentials, so that another suite can drive
            # them directly with an official client (githubkit, google-cloud-run...)
            "github_token": github_token,
            "cloud_run": cloudrun_url,
            "cloud_run_job": f"projects/{GCP_PROJECT}/locations/{GCP_REGION}/jobs/{GCP_JOB}",
            "cloud_run_token": cloudrun_token,
        }
        if args.info:
            _write_private(Path(args.info), json.dumps(info, indent=2) + "\n")
        print(_banner(info), flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from its first byte (it holds tokens)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _banner(info: dict[str, str]) -> str:
    url, token = info["gateway"], info["token"]
    return f"""egw dev: the gateway is at {url}, with simulated backends
  nomad       {info["nomad"]}
  github      {info["github"]}  (webhooks go to {url}/v1/webhooks/github)
  cloud run   {info["cloud_run"]}  (job {info["cloud_run_job"]})
  database    {info["database"]}

Try it (in another terminal):
  export EGW_URL={url} EGW_TOKEN={token}
  egw submit --follow -- echo hello from the local runner
  egw submit --follow --provider nomad --task '{{"job_id": "demo-job-1", \
"image": "busybox:latest", "command": "echo", "args": ["hello"]}}'
  egw submit --follow --provider github_actions --task '{{"workflow_id": "deploy.yml", \
"ref": "main", "inputs": {{"env": "prod"}}}}'
  egw submit --follow --provider cloud_run --task '{{"project": "{GCP_PROJECT}", \
"region": "{GCP_REGION}", "job": "{GCP_JOB}", "args": ["hello"]}}'
  egw tasks

Two teams share it (namespaces team-a and team-b; the token above sees both):
  EGW_TOKEN={info["team_a_token"]} egw submit --follow --provider github_actions \
--task '{{"workflow_id": "deploy.yml", "ref": "main"}}'
  EGW_TOKEN={info["team_b_token"]} egw tasks     # team-b sees none of team-a's tasks
Ctrl-C stops everything."""


#: `egw dev` takes the first of these that is free, so it can run beside `egw serve` on 8080
DEFAULT_PORTS = range(8080, 8100)


def _gateway_port(host: str, asked: int | None) -> int:
    """The port asked for (0: any free one), else the first free of `DEFAULT_PORTS`."""
    if asked is not None:
        return asked or _free_port(host)
    for port in DEFAULT_PORTS:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.bind((host, port))
        except OSError:
            continue
        if port != DEFAULT_PORTS[0]:
            print(f"egw dev: port {DEFAULT_PORTS[0]} is taken, using {port}", file=sys.stderr)
        return port
    return _free_port(host)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
