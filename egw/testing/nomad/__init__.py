"""A Nomad agent simulator speaking Nomad's HTTP API on loopback (for tests and ``egw dev``).

Endpoints (tests/samples/nomad/*.md): ``GET /v1/jobs`` (``prefix``, ``namespace=*``),
``POST|PUT /v1/jobs`` (with ``EnforceIndex``), ``GET|POST|PUT|DELETE /v1/job/:id``
(``?purge=true``), ``GET /v1/job/:id/allocations``, ``/evaluations``, ``/summary``,
``GET /v1/allocations``, ``GET /v1/allocation/:id``, ``GET /v1/evaluations``,
``GET /v1/evaluation/:id`` and ``/allocations``, ``GET /v1/client/fs/ls/:alloc``,
``GET /v1/client/fs/logs/:alloc`` (framed, or ``plain=true``; ``follow``, ``offset``,
``origin``; files rotated per the task's ``LogConfig``, `egw.testing.nomad.logs`),
``GET /v1/event/stream`` (NDJSON, ``{}`` heartbeats, ``index`` resume that
repeats the newest event when asked beyond it, ``topic=Topic[:key]``, ``namespace``),
``GET /v1/acl/token/self``. Reads answer ``X-Nomad-Index`` and block on ``?index=&wait=``.
Other methods on these paths answer 405 ``Invalid method``.
Errors are plain text, as Nomad's (``job not found``, ``Permission denied``...).

Usage::

    sim = NomadSimulator(time_scale=0.01)          # 1 simulated second = 10 ms
    base_url = await sim.start()                   # also sim.url; or aiohttp_server(sim.app)
    ...
    await sim.close()

Scripting (all durations in simulated seconds)::

    sim.script("job-a", stdout=b"one\\ntwo\\n", stderr=b"warn\\n", exit_code=3,
               duration_s=20, start_delay_s=0.5, schedule_delay_s=0.1)
    sim.script("job-b", placement_failure="memory")   # or "cpu", "datacenter", "constraint"
    sim.script("job-c", driver_failure="failed to pull image")
    sim.script("job-d", lost_after_s=2)               # the node goes away mid-run
    sim.cluster.default_script = Script(duration_s=5) # for every job not scripted

Unscripted, a job prints its task's ``args`` (or ``command``) as one line on stdout, like
``echo``, and exits 0 one simulated second after it started. A job asking for more than the
node has (4000 MHz, 8192 MB) or for datacenters other than ``dc1``/``*`` fails placement.
A group's ``MaxRunDuration`` (ns) stops the allocation with "allocation exceeded
max_run_duration". A failed allocation is replaced as often as the group's
``ReschedulePolicy`` allows (``Attempts``/``Unlimited``; after its ``Delay``): scripting
``exit_codes=(1, 0)`` fails the first allocation and lets its replacement succeed.
Restart policies are not simulated (as ``Attempts: 0``).

Versions: ``NomadSimulator(version="2.0.5")`` (the default) picks behaviour that changed
between v1.6.0 and v2.0.5: from 1.11.2 (and 2.0.0) an event-stream subscription the token
may not make answers 200 and is closed with no body, before it a 403; ``MaxRunDuration`` is
honoured from 2.0.3. ``sim.event_stream_denied = True`` refuses every subscription that way.

ACLs::

    sim = NomadSimulator(acl=True)
    sim.add_token("s3cr3t", namespaces={"default": {"submit-job", "read-job", "read-logs"}})
    sim.add_token("root", management=True)
    # no token: 403 "Permission denied"; unknown token: 403 "ACL token not found"

Faults::

    sim.fail(r"^/v1/jobs$", method="POST", status=500, times=2)   # plain-text 500s
    sim.fail(r"^/v1/jobs$", after_commit=True)     # registers, then answers 500 (lost answer)
    sim.slow(r"/allocations$", delay_s=2.0)        # wall-clock seconds
    gate = sim.hold(r"^/v1/event/stream$")         # held until gate.set()
    sim.drop_event_streams()                       # cut every open event stream now
    sim.drop_log_streams()
    sim.age_out_events(keep=0)                     # the event buffer forgets old indexes
    sim.count("POST", r"^/v1/jobs$")               # requests seen (sim.requests)
"""

from egw.testing.nomad.cluster import Cluster
from egw.testing.nomad.script import Script, SimError
from egw.testing.nomad.server import Fault, NomadSimulator, Token, parse_duration

__all__ = ["Cluster", "Fault", "NomadSimulator", "Script", "SimError", "Token", "parse_duration"]
