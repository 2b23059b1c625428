"""Liveness and readiness (no token), and the admin prune route."""

from __future__ import annotations

from aiohttp import web

from egw import __version__
from egw.web.edge import principal
from egw.web.keys import circuits_key, database_key, service_key

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and takes writes, and a provider is enabled.

    ``storage`` says why writes fail (``error``: SQLite's reason), the size of the
    database files, and its data (``used_bytes``) against ``storage.max_bytes`` (past
    it, ``full``: new tasks are refused, but the gateway stays ready for its tasks).
    Each provider that calls an upstream shows its breakers (``circuit``). An open one
    does not make the gateway unready: it still takes tasks (kept ``pending`` until the
    breaker closes), serves reads and streams, and runs the other providers' work;
    taking it out of a load balancer would only hide that from its clients.
    On PostgreSQL, ``replica``: this replica's id, the leases it holds and every lease's
    holder, the replicas it sees, and its feed's last lag."""
    service = request.app[service_key]
    store = dict(service.storage())
    db_ok = await request.app[database_key].writable() and bool(store["writable"])
    providers = {}
    for name, provider in service.providers.items():
        try:
            providers[name] = dict(provider.health())
        # a provider's health must not break readiness reporting
        except Exception as exc:  # noqa: BLE001
            providers[name] = {"error": repr(exc)}
    for name, circuit in request.app[circuits_key].health().items():
        if name in providers:
            providers[name]["circuit"] = circuit
    ready = db_ok and bool(providers)
    body: dict[str, object] = {
        "status": "ready" if ready else "not_ready",
        "database": db_ok,
        "storage": store,
        "providers": providers,
    }
    if db_ok:  # (a database that does not answer has no replicas to list)
        replica = await request.app[database_key].replication()
        if replica is not None:
            body["replica"] = replica
    return web.json_response(body, status=200 if ready else 503)


@routes.post("/v1/admin/prune")
async def prune(request: web.Request) -> web.Response:
    principal(request).require("admin")
    await request.app[service_key].prune()
    return web.json_response({"status": "pruned"})
