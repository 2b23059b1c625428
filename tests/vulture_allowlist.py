"""Names in egw/ that only a framework or a protocol calls, for the dead-code check
(`tests/test_lint.py` runs vulture over egw/ with this file): each is used, by name,
by code vulture does not read."""

# each bare attribute access below tells vulture the name is used (hence B018)
# ruff: noqa: B018
from egw.config.namespaces import CloudRunLimits, GitHubLimits
from egw.logconfig import _Logger
from egw.metrics import Metrics
from egw.web.edge import _AnyTarget
from egw.wire.nomad.events import StreamLine
from egw.wire.nomad.logs import LogFrame

# prometheus_client's custom collector API: the registry calls describe() and collect()
Metrics.describe
Metrics.collect
# structlog calls its logger's method named after the level
_Logger.debug
# aiohttp's web.AbstractResource interface: the router and app.router calls these
_AnyTarget.canonical
_AnyTarget.url_for
_AnyTarget.add_prefix
_AnyTarget.get_info
_AnyTarget.raw_match
# part of the parsed line's and frame's contract (a keep-alive), asserted in tests/wire
StreamLine.heartbeat
LogFrame.heartbeat
# the config loader fills these by field name; NamespaceProviders.allowed() reads them through
# the dataclass's fields
GitHubLimits.workflows
CloudRunLimits.projects
CloudRunLimits.regions
