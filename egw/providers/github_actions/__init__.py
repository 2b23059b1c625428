"""The GitHub Actions provider, in parts: see `egw.providers.github_actions.provider`."""

from egw.providers.github_actions.provider import GitHubActionsProvider

__all__ = ["GitHubActionsProvider"]
