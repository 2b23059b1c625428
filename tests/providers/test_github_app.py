"""GitHub App authentication against the GitHub simulator over real HTTP: the JWT, the
installation token exchange, refresh before expiry and after a 401 (once, single-flight),
and what a refused JWT looks like."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from egw.config import GitHubActionsConfig, GitHubAppConfig, RetryConfig
from egw.core.model import Observation, TaskState
from egw.errors import EgwError, ProviderError
from egw.providers.github_actions import GitHubActionsProvider
from egw.providers.github_actions.appauth import app_jwt
from egw.testing.github import GitHubSimulator, JobScript, RunScript, SimApp, StepScript
from egw.testing.github import apps as simapps
from egw.testing.sink import MemorySink
from egw.web.hooks import render

SECRET = "s3cret-for-app-tests"
APP_ID, INSTALLATION = "424242", 31337
SEED = {"workflow_id": "deploy.yml", "ref": "main", "inputs": {"env": "prod"}}
RETRY = RetryConfig(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, deadline_s=5.0)
RUNS = "/repos/octo-org/octo-repo/actions/runs"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


KEY = new_key()


@dataclass
class Env:
    sim: GitHubSimulator
    app: SimApp
    provider: GitHubActionsProvider
    sink: MemorySink

    def exchanges(self) -> int:
        return len(self.app.issued)

    def calls(self, path: str) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.sim.requests if r[1].split("?")[0] == path]


MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(aiohttp_server: Any) -> AsyncIterator[MakeEnv]:
    made: list[tuple[Env, aiohttp.ClientSession]] = []

    async def make(
        *,
        lifetime_s: float = 3600.0,
        sim_key: rsa.RSAPrivateKey = KEY,
        app_id: str = APP_ID,
        installation_id: int = INSTALLATION,
        clock_offset_s: float = 0.0,
    ) -> Env:
        holder: dict[str, GitHubActionsProvider] = {}

        async def hook(request: web.Request) -> web.Response:
            try:
                outcome = await holder["provider"].handle_webhook(
                    request.headers, await request.read()
                )
            except EgwError as exc:
                return web.json_response(exc.to_json(), status=exc.status)
            return render(outcome)

        receiver = web.Application()
        receiver.router.add_post("/v1/webhooks/github", hook)
        server = await aiohttp_server(receiver)
        sim_app = SimApp(
            app_id=APP_ID,
            installation_id=INSTALLATION,
            public_key=sim_key.public_key(),
            token_lifetime_s=lifetime_s,
            clock_offset_s=clock_offset_s,
        )
        sim = GitHubSimulator(
            webhook_url=str(server.make_url("/v1/webhooks/github")),
            webhook_secret=SECRET,
            time_scale=0.005,
            run_creation_delay_s=0.5,
            github_app=sim_app,
        )
        await sim.start()
        cfg = GitHubActionsConfig(
            enabled=True,
            api_url=sim.base_url,
            app=GitHubAppConfig(
                app_id=app_id, installation_id=installation_id, private_key=pem(KEY)
            ),
            webhook_secret=SECRET,
            owner="octo-org",
            repo="octo-repo",
            poll_min_s=30.0,
            poll_max_s=60.0,
            request_timeout_s=5.0,
        )
        cfg.validate("providers.github_actions")
        session = aiohttp.ClientSession()
        provider = GitHubActionsProvider(cfg, session=session, retry=RETRY)
        holder["provider"] = provider
        sink = MemorySink()
        await provider.start(sink)
        env = Env(sim, sim_app, provider, sink)
        made.append((env, session))
        return env

    yield make
    for env, session in reversed(made):
        await env.provider.close()
        await env.sim.close()
        await session.close()


async def submit(env: Env) -> str:
    task = env.sink.add_task("github_actions", env.provider.validate(SEED).to_json())
    sub = await env.provider.submit(task, idempotency_key=task.id)
    await env.sink.set_upstream(
        task.id, upstream_id=sub.upstream_id, upstream_url=sub.upstream_url, data=sub.upstream
    )
    await env.sink.observe(
        task.id, sub.observation or Observation(state=TaskState.QUEUED), source="submit"
    )
    return task.id


# --- the JWT ----------------------------------------------------------------------------------


def test_the_jwt_follows_githubs_rules() -> None:
    app = GitHubAppConfig(app_id=APP_ID, installation_id=INSTALLATION, private_key=pem(KEY))
    now = time.time()
    token = app_jwt(app, app.load_private_key(), now)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token, KEY.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims["iss"] == APP_ID
    assert claims["iat"] == int(now) - 60  # GitHub's advice against clock drift
    assert 0 < claims["exp"] - int(now) <= 600  # at most 10 minutes ahead
    sim_app = SimApp(app_id=APP_ID, installation_id=INSTALLATION, public_key=KEY.public_key())
    assert sim_app.check_jwt(f"Bearer {token}", now) is None


def _signed(claims: dict[str, Any], key: Any = KEY, alg: str = "RS256") -> str:
    return "Bearer " + jwt.encode(claims, key, algorithm=alg)


def test_the_simulator_refuses_what_github_refuses() -> None:
    sim_app = SimApp(
        app_id=APP_ID, installation_id=1, public_key=KEY.public_key(), client_id="Iv23liXYZ"
    )
    now = int(time.time())
    good = {"iat": now - 60, "exp": now + 540, "iss": APP_ID}
    assert sim_app.check_jwt(_signed(good), now) is None
    assert sim_app.check_jwt(_signed({**good, "iss": "Iv23liXYZ"}), now) is None
    cases = [
        (_signed(good, new_key()), simapps.UNDECODABLE),  # another app's key
        (_signed({**good, "iss": "1"}), simapps.UNDECODABLE),  # another App ID
        (_signed(good, "a-shared-secret-long-enough-for-hs256!", "HS256"), simapps.UNDECODABLE),
        ("Bearer not.a.jwt", simapps.UNDECODABLE),
        ("token " + _signed(good)[7:], simapps.UNDECODABLE),
        (_signed({**good, "iat": now + 30}), simapps.IAT),  # from a clock running fast
        (_signed({**good, "iat": str(now)}), simapps.IAT),
        (_signed({**good, "exp": now + 601}), simapps.TOO_FAR),
        (_signed({**good, "exp": now - 1}), simapps.EXPIRED),
        (_signed({"iat": now - 60, "iss": APP_ID}), simapps.EXPIRED),
    ]
    for header, message in cases:
        assert sim_app.check_jwt(header, now) == message, header


# --- installation tokens ---------------------------------------------------------------------


async def test_every_call_carries_an_installation_token_got_with_the_jwt(
    make_env: MakeEnv,
) -> None:
    env = await make_env()
    task_id = await submit(env)
    await env.sink.wait_for(task_id, state=TaskState.SUCCEEDED, logs=True)
    assert env.exchanges() == 1  # cached: one token for the whole run
    (exchange,) = env.calls(f"/app/installations/{INSTALLATION}/access_tokens")
    assert exchange[0] == "POST" and exchange[2]["Authorization"].startswith("Bearer ey")
    token = env.app.issued[0]
    api_calls = [r for r in env.sim.requests if r[1].startswith("/repos/")]
    assert api_calls and all(r[2]["Authorization"] == f"Bearer {token}" for r in api_calls)
    expires_at = env.provider.health()["app_token_expires_at"]
    assert isinstance(expires_at, str) and expires_at.endswith("Z")


async def test_tokens_expire_during_a_long_run_and_it_is_followed_to_its_logs(
    make_env: MakeEnv,
) -> None:
    """Tokens live 1 s; the run takes about 4 s: the provider fetches new ones before each
    expires (a quarter of their lifetime early) and no call is refused."""
    env = await make_env(lifetime_s=1.0)
    env.sim.script(
        RunScript(
            jobs=[
                JobScript(
                    "build",
                    steps=[StepScript("Compile", 400, output="compiled"), StepScript("Test", 400)],
                )
            ]
        )
    )
    task_id = await submit(env)
    task = await env.sink.wait_for(task_id, state=TaskState.SUCCEEDED, logs=True, timeout_s=20)
    assert task.status is TaskState.SUCCEEDED
    assert "compiled" in env.sink.output(task_id).decode()  # the job log, fetched at the end
    assert env.exchanges() >= 2  # the first token had expired when the log was fetched
    last = env.app.issued[-1]
    log_calls = [r for r in env.sim.requests if r[1].endswith("/logs")]
    assert log_calls and log_calls[-1][2]["Authorization"] == f"Bearer {last}"
    assert not env.app.refusals


async def test_a_401_refreshes_once_and_retries_once(make_env: MakeEnv) -> None:
    env = await make_env()
    first = await env.provider.api.request("GET", RUNS)
    assert first.status == 200 and env.exchanges() == 1
    env.app.revoke_tokens()  # DELETE /installation/token, or an expiry the clock missed
    again = await env.provider.api.request("GET", RUNS)
    assert again.status == 200 and env.exchanges() == 2
    tokens = [r[2]["Authorization"] for r in env.calls(RUNS)]
    assert tokens == [
        f"Bearer {t}" for t in (env.app.issued[0], env.app.issued[0], env.app.issued[1])
    ]
    # a 401 that a new token does not cure is answered, not looped on
    env.sim.fail_next(401, match=RUNS, count=2, message="Bad credentials")
    refused = await env.provider.api.request("GET", RUNS)
    assert refused.status == 401 and env.exchanges() == 3
    assert len(env.calls(RUNS)) == 5


async def test_concurrent_calls_share_one_exchange(make_env: MakeEnv) -> None:
    env = await make_env()
    answers = await asyncio.gather(*(env.provider.api.request("GET", RUNS) for _ in range(20)))
    assert {a.status for a in answers} == {200} and env.exchanges() == 1
    env.app.revoke_tokens()
    answers = await asyncio.gather(*(env.provider.api.request("GET", RUNS) for _ in range(20)))
    assert {a.status for a in answers} == {200}
    assert env.exchanges() == 2  # twenty 401s, one refresh
    assert len(env.calls(RUNS)) == 20 + 20 + 20


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        ({"sim_key": new_key()}, 401, simapps.UNDECODABLE),  # the app's key was rotated
        ({"app_id": "777"}, 401, simapps.UNDECODABLE),  # the key of another app
        ({"installation_id": 99}, 404, "Not Found"),  # the app is not installed there
    ],
)
async def test_a_refused_exchange_fails_the_call_with_githubs_reason(
    make_env: MakeEnv, options: dict[str, Any], status: int, message: str
) -> None:
    env = await make_env(**options)
    with pytest.raises(ProviderError) as err:
        await submit(env)
    assert err.value.upstream_status == status and message in str(err.value)
    assert env.app.refusals and env.app.refusals[0] == (status, message)
    assert not [r for r in env.sim.requests if r[1].startswith("/repos/")]  # no call without


@pytest.mark.parametrize("offset", [-55.0, 0.0, 55.0])
async def test_a_jwt_backdated_a_minute_survives_clock_drift(
    make_env: MakeEnv, offset: float
) -> None:
    """GitHub's clock up to a minute behind ours (or ahead): the JWT is still taken."""
    env = await make_env(clock_offset_s=offset)
    assert (await env.provider.api.request("GET", RUNS)).status == 200
    assert env.exchanges() == 1 and not env.app.refusals


async def test_a_clock_too_far_ahead_of_githubs_is_told(make_env: MakeEnv) -> None:
    env = await make_env(clock_offset_s=-75.0)  # ours 75 s ahead: iat is in GitHub's future
    with pytest.raises(ProviderError) as err:
        await env.provider.api.request("GET", RUNS)
    assert err.value.upstream_status == 401 and simapps.IAT in str(err.value)
