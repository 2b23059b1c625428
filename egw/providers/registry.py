"""Build the enabled providers from config: the one place that names each backend."""

from __future__ import annotations

import aiohttp

from egw.config import Config
from egw.providers.base import Provider


def build_providers(cfg: Config, session: aiohttp.ClientSession) -> dict[str, Provider]:
    """Each enabled provider, keyed by its name; a backend is imported only if enabled."""
    providers: dict[str, Provider] = {}
    p = cfg.providers
    if p.local.enabled:
        from egw.providers.local import LocalProvider

        providers[LocalProvider.name] = LocalProvider(p.local)
    if p.nomad.enabled:
        from egw.providers.nomad import NomadProvider

        providers[NomadProvider.name] = NomadProvider(p.nomad, session=session, retry=cfg.retry)
    if p.github_actions.enabled:
        from egw.providers.github_actions import GitHubActionsProvider

        providers[GitHubActionsProvider.name] = GitHubActionsProvider(
            p.github_actions, session=session, retry=cfg.retry
        )
    if p.cloud_run.enabled:
        from egw.providers.cloudrun import CloudRunProvider

        providers[CloudRunProvider.name] = CloudRunProvider(
            p.cloud_run, session=session, retry=cfg.retry
        )
    return providers
