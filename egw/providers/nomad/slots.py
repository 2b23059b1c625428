"""How many Nomad log streams egw follows live at once, and how the others catch up.

Each followed stream is a ``follow=true`` request held open on the Nomad agent (a goroutine
and a forwarded RPC stream per request, hashicorp/nomad client/fs_endpoint.go ``logs``),
and on egw one connection. Thousands of allocations times two streams cannot all be
followed: before this budget, log followers queued on the HTTP client's pool of 100
connections, shared with every other call, so past the 50th allocation nothing was read
until an earlier one ended. Now at most ``log_max_followers`` streams are followed live,
over a pool of their own (`LogSlots.session`), so log reads never wait on nor starve API
calls. A stream without a live slot is caught up from its stored offset by non-follow
reads (``follow=false``: what is on disk now, then the answer ends) every ``log_poll_s``,
paced so that all of them together make at most ``log_reads_per_s``; it takes the next
free slot, in the order streams asked for one. Output of a stream that is caught up
reaches its tailers at the next catch-up; when the allocation ends, every stream is
drained to its end as before.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiohttp

#: catch-up reads in flight at once (each holds one connection of the pool while it reads)
CATCHUP_CONCURRENCY = 16


class LogSlots:
    """The live-follow budget (handed over in order of asking) and the catch-up pace."""

    def __init__(self, max_followers: int, poll_s: float, reads_per_s: float) -> None:
        self.limit = max_followers
        self.poll_s = poll_s
        self.reads_per_s = reads_per_s
        self.live = 0
        #: streams waiting for a live slot (each resolved when a slot is handed to it)
        self._queue: deque[asyncio.Future[None]] = deque()
        self.catching_up = 0
        self.catchup_reads = 0
        self.catchup_gate = asyncio.Semaphore(CATCHUP_CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The log streams' own connection pool: a slot per live follower, plus the
        catch-up reads (created on first use, inside the running loop)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.limit + CATCHUP_CONCURRENCY)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def take(self) -> bool:
        """A live slot now, if one is free and nobody waits for it before."""
        if self.live < self.limit and not self._queue:
            self.live += 1
            return True
        return False

    def give_back(self) -> None:
        """The slot goes to the first stream waiting for one, else back to the budget."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot is handed over: ``live`` stays counted
                return
        self.live -= 1

    def ask(self) -> asyncio.Future[None]:
        """Join the queue for a live slot; pass the future to `forget` when done waiting."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        return waiter

    def forget(self, waiter: asyncio.Future[None]) -> bool:
        """Stop waiting; True if a slot was handed over meanwhile (the caller now holds it)."""
        if waiter.done() and not waiter.cancelled():
            return True
        waiter.cancel()
        try:
            self._queue.remove(waiter)
        except ValueError:
            pass
        return False

    def pause_s(self) -> float:
        """How long a stream without a slot waits between two catch-up reads: ``poll_s``,
        or longer when that many streams would read more than ``reads_per_s`` together."""
        return max(self.poll_s, self.catching_up / self.reads_per_s)

    def health(self) -> dict[str, int]:
        return {
            "max": self.limit,
            "live": self.live,
            "waiting": sum(1 for w in self._queue if not w.done()),
            "catching_up": self.catching_up,
            "catchup_reads": self.catchup_reads,
        }
