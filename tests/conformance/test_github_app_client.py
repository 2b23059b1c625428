"""The GitHub simulator's App authentication driven by githubkit's own App strategies
(its JWT, its token exchange, its ``token <installation token>`` header), not by egw's code.

githubkit parses the 201 of ``POST /app/installations/{id}/access_tokens`` into its
``InstallationToken`` model (generated from github/rest-api-description), so a shape the
simulator gets wrong fails here; a refused JWT must be githubkit's ``RequestFailed`` 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RequestFailed

from egw.testing.github import GitHubSimulator, SimApp
from egw.testing.github.apps import UNDECODABLE

APP_ID, INSTALLATION = 424242, 31337
OWNER, REPO = "octo-org", "octo-repo"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
async def sim() -> AsyncIterator[GitHubSimulator]:
    app = SimApp(app_id=str(APP_ID), installation_id=INSTALLATION, public_key=KEY.public_key())
    simulator = GitHubSimulator(github_app=app, time_scale=0.005)
    await simulator.start()
    yield simulator
    await simulator.close()


def client(sim: GitHubSimulator, auth: Any) -> GitHub[Any]:
    # a cache of its own: githubkit caches JWTs and tokens per app id
    return GitHub(
        auth,
        base_url=sim.base_url,
        http_cache=False,
        auto_retry=False,
        cache_strategy=MemCacheStrategy(),
    )


async def test_the_token_endpoint_answers_githubkits_model(sim: GitHubSimulator) -> None:
    async with client(sim, AppAuthStrategy(APP_ID, pem(KEY))) as github:
        resp = await github.rest.apps.async_create_installation_access_token(INSTALLATION)
    assert resp.status_code == 201
    token = resp.parsed_data
    assert token.token.startswith("ghs_") and token.token in sim.github_app.tokens  # type: ignore[union-attr]
    # the exact format githubkit's installation strategy parses (strptime, whole seconds, Z)
    expires = datetime.strptime(token.expires_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expires > datetime.now(UTC)
    assert token.repository_selection == "all"


async def test_an_installation_reads_the_actions_api_with_its_token(
    sim: GitHubSimulator,
) -> None:
    auth = AppInstallationAuthStrategy(APP_ID, pem(KEY), INSTALLATION)
    async with client(sim, auth) as github:
        for _ in range(2):
            runs = await github.rest.actions.async_list_workflow_runs_for_repo(OWNER, REPO)
            assert runs.status_code == 200 and runs.parsed_data.total_count == 0
    assert sim.github_app is not None
    (token,) = sim.github_app.issued  # cached by githubkit across the two calls
    reads = [r for r in sim.requests if r[1].startswith("/repos/")]
    assert [r[2]["Authorization"] for r in reads] == [f"token {token}"] * 2


async def test_a_jwt_of_another_key_is_refused_as_github_does(sim: GitHubSimulator) -> None:
    async with client(
        sim, AppAuthStrategy(APP_ID, pem(rsa.generate_private_key(65537, 2048)))
    ) as github:
        with pytest.raises(RequestFailed) as err:
            await github.rest.apps.async_create_installation_access_token(INSTALLATION)
    assert err.value.response.status_code == 401
    assert err.value.response.json()["message"] == UNDECODABLE
    async with client(sim, AppAuthStrategy(APP_ID, pem(KEY))) as github:
        with pytest.raises(RequestFailed) as err:
            await github.rest.apps.async_create_installation_access_token(INSTALLATION + 1)
    assert err.value.response.status_code == 404
