"""Build the enabled providers from config: the one place that names each backend."""

from __future__ import annotations

import aiohttp

from egw.config import Config
from egw.providers.base import Provider
from egw.providers.circuit import Circuits


def build_providers(
    cfg: Config, session: aiohttp.ClientSession, circuits: Circuits | None = None
) -> dict[str, Provider]:
    """Each enabled provider, keyed by its name; a backend is imported only if enabled.
    Each that calls an upstream gets its breakers from ``circuits``."""
    providers: dict[str, Provider] = {}
    circuits = circuits or Circuits()
    p = cfg.providers
    if p.local.enabled:
        from egw.providers.local import LocalProvider

        providers[LocalProvider.name] = LocalProvider(p.local)
    if p.nomad.enabled:
        from egw.providers.nomad import NomadProvider

        providers[NomadProvider.name] = NomadProvider(
            p.nomad,
            session=session,
            retry=cfg.retry,
            circuit=circuits.breakers(NomadProvider.name, p.nomad.circuit),
        )
    if p.github_actions.enabled:
        from egw.providers.github_actions import GitHubActionsProvider

        providers[GitHubActionsProvider.name] = GitHubActionsProvider(
            p.github_actions,
            session=session,
            retry=cfg.retry,
            circuit=circuits.breakers(GitHubActionsProvider.name, p.github_actions.circuit),
        )
    if p.cloud_run.enabled:
        from egw.providers.cloudrun import CloudRunProvider

        providers[CloudRunProvider.name] = CloudRunProvider(
            p.cloud_run,
            session=session,
            retry=cfg.retry,
            circuit=circuits.breakers(CloudRunProvider.name, p.cloud_run.circuit),
        )
    return providers
