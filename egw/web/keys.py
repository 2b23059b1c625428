"""Every `web.AppKey` of the application, in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from egw.config import Config
from egw.metrics import Metrics
from egw.service.fanout import Hub
from egw.service.tasks import TaskService
from egw.store import Store
from egw.web.auth import Authenticator
from egw.web.sse import EventChannel, LogChannel, Ticker

config_key = web.AppKey("config", Config)
auth_key = web.AppKey("auth", Authenticator)
store_key = web.AppKey("store", Store)
session_key = web.AppKey("session", aiohttp.ClientSession)
hub_key = web.AppKey("hub", Hub)
service_key = web.AppKey("service", TaskService)
ticker_key = web.AppKey("ticker", Ticker)
log_channels_key = web.AppKey("log_channels", dict[str, LogChannel])
event_channel_key = web.AppKey("event_channel", EventChannel)
metrics_key = web.AppKey("metrics", Metrics)
