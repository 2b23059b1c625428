"""The application's shared state: every `web.AppKey`, set by `egw.web.app` (the one
exception, `egw.web.tasks.body_cache_key`, is that module's own cache)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from egw.config import Config
from egw.metrics import Metrics
from egw.providers.circuit import Circuits
from egw.service.channels import EventChannel, LogChannels
from egw.service.database import Database
from egw.service.gateway import GatewayLog
from egw.service.reads import TaskReads
from egw.service.tasks import TaskService
from egw.service.ticker import Ticker
from egw.web.auth import Authenticator

config_key = web.AppKey("config", Config)
auth_key = web.AppKey("auth", Authenticator)
database_key = web.AppKey("database", Database)
session_key = web.AppKey("session", aiohttp.ClientSession)
service_key = web.AppKey("service", TaskService)
reads_key = web.AppKey("reads", TaskReads)
ticker_key = web.AppKey("ticker", Ticker)
log_channels_key = web.AppKey("log_channels", LogChannels)
event_channel_key = web.AppKey("event_channel", EventChannel)
metrics_key = web.AppKey("metrics", Metrics)
circuits_key = web.AppKey("circuits", Circuits)
gateway_key = web.AppKey("gateway", GatewayLog)
