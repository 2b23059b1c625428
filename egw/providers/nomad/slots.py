"""How many Nomad log streams egw follows live at once, which ones, and how the others catch up.

Each followed stream is a ``follow=true`` request held open on the Nomad agent (a goroutine
and a forwarded RPC stream per request, hashicorp/nomad client/fs_endpoint.go ``logs``),
and on egw one connection. Thousands of allocations times two streams cannot all be
followed: before this budget, log followers queued on the HTTP client's pool of 100
connections, shared with every other call, so past the 50th allocation nothing was read
until an earlier one ended. Now at most ``log_max_followers`` streams are followed live,
over a pool of their own (`LogSlots.session`), so log reads never wait on nor starve API
calls. A stream without a live slot is caught up from its stored offset by non-follow
reads (``follow=false``: what is on disk now, then the answer ends) every ``log_poll_s``,
paced so that all of them together make at most ``log_reads_per_s``.

Who gets a live slot: the streams of a task that a client tails first (`Turn.tailed`, set
by the provider's ``attention``), then the others in the order they asked. A tailed stream
that finds every slot taken preempts the live follower of an untailed stream: that one is
asked to stop (`Turn.demoted`), ends its follow at a frame boundary with its cursor exactly
after the last byte it stored, hands its slot over and goes back to catch-up from there, so
no byte is lost or stored twice. When a task's last tailer leaves, its streams keep the
slots they hold, as ordinary followers that a tailed stream may preempt.

A stream waiting for a slot is a `Turn` in a queue (a record, not a waiting future): a slot
freed while it is reading is granted all the same, and it follows live from its next read.
Between two catch-up reads a stream is parked (`LogSlots.park`): no coroutine, only its
record in a heap of due times that one timer serves; a grant, a preemption or its
allocation's end wakes it sooner (`Turn.poke`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

#: catch-up reads in flight at once (each holds one connection of the pool while it reads)
CATCHUP_CONCURRENCY = 16

#: the queue a turn waits in (`Turn.queued`)
_NONE, _ORDINARY, _TAILED = 0, 1, 2


@dataclass(eq=False, slots=True)
class Turn:
    """One stream's standing with the live budget."""

    #: a client tails the stream's task: it goes before the others and may preempt them
    tailed: bool = False
    #: holds a live slot (granted; it follows from its next read)
    live: bool = False
    #: asked to give its live slot back to a tailed stream
    demoted: bool = False
    #: the queue it waits in (``_NONE``: it does not wait)
    queued: int = _NONE
    #: resolved when the stream should look at its standing again (granted, or demoted)
    signal: asyncio.Future[None] | None = None
    #: the stream ended: never grant it anything again
    gone: bool = False
    #: what resumes the stream once parked (its follower's next read)
    resume: Callable[[], None] | None = None
    #: parked in these slots' heap, until its next catch-up read (or sooner when poked)
    parked: LogSlots | None = None
    #: its entry in the heap of parked streams (older entries of it are dropped)
    ticket: int = 0

    def poke(self) -> None:
        """Look at the standing again: a reading stream is signalled, a parked one resumed."""
        if self.signal is not None and not self.signal.done():
            self.signal.set_result(None)
        owner, self.parked = self.parked, None
        if owner is not None:
            owner.catching_up -= 1
            if self.resume is not None:
                self.resume()

    def wake_on(self) -> asyncio.Future[None]:
        """A future resolved at the next grant or demotion (a fresh one once consumed)."""
        if self.signal is None or self.signal.done():
            self.signal = asyncio.get_running_loop().create_future()
        return self.signal


class LogSlots:
    """The live-follow budget (tailed streams first, then in order of asking) and the
    catch-up pace."""

    def __init__(self, max_followers: int, poll_s: float, reads_per_s: float) -> None:
        self.limit = max_followers
        self.poll_s = poll_s
        self.reads_per_s = reads_per_s
        #: the turns holding a live slot, oldest first
        self._holders: dict[Turn, None] = {}
        self._queues: dict[int, deque[Turn]] = {_ORDINARY: deque(), _TAILED: deque()}
        self._waiting = {_ORDINARY: 0, _TAILED: 0}
        self._stale = 0  # entries of turns no longer in the queue they sit in
        self.catching_up = 0
        self.catchup_reads = 0
        #: live slots taken from an untailed stream for a tailed one
        self.preemptions = 0
        self.catchup_gate = asyncio.Semaphore(CATCHUP_CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None
        #: parked streams by due time: (when, ticket, the turn)
        self._due: list[tuple[float, int, Turn]] = []
        self._order = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def live(self) -> int:
        return len(self._holders)

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- a stream's own calls -------------------------------------------------------------

    def take(self, turn: Turn) -> bool:
        """Whether the stream may follow live now. Streams get free slots in their queue's
        order, tailed ones first; one that gets none waits in its queue (a tailed one having
        first asked an untailed live stream to hand its slot over)."""
        if not turn.live:
            self._enqueue(turn)
            self._hand_over()
        return turn.live

    def give_back(self, turn: Turn) -> None:
        """The stream stops following live: its slot goes to the first stream waiting
        (tailed ones first), else back to the budget."""
        if not turn.live:
            return
        turn.live = turn.demoted = False
        del self._holders[turn]
        self._hand_over()

    def leave(self, turn: Turn) -> None:
        """The stream ended: its slot (if any) goes on, and it is never granted nor
        resumed again."""
        if turn.parked is not None:
            turn.parked = None
            self.catching_up -= 1
        self.give_back(turn)
        turn.gone = True
        self._dequeue(turn)

    def park(self, turn: Turn) -> None:
        """The stream waits for its next catch-up read, ``pause_s`` from now: its
        ``resume`` is called then, or sooner if the turn is poked (a grant, a preemption,
        its end). It holds no coroutine meanwhile, nor anything but its turn."""
        if turn.parked is None:
            turn.parked = self
            self.catching_up += 1
        self._schedule(turn)

    def repark(self, turn: Turn) -> None:
        """A parked stream's next catch-up read is put off (its sibling's listing just
        showed nothing new for it: the read it was due for would find none) until half a
        pause after the sibling's next listing, which reparks it again while both stay
        quiet. Without that half pause the two came due together whenever the loop was
        late, and both listed. New output of the quiet stream is seen by the sibling's
        listing, which then leaves it due: it is read at most 1.5 pauses after it came."""
        if turn.parked is not None:
            self._schedule(turn, pauses=1.5)

    def _schedule(self, turn: Turn, *, pauses: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + self.pause_s() * pauses
        turn.ticket = next(self._order)
        heapq.heappush(self._due, (when, turn.ticket, turn))
        if self._timer is None or when < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        """Resume the parked streams that are due (an entry of a stream woken sooner,
        parked again or ended is dropped), and set the timer for the next."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        while due and due[0][0] <= now:
            _, ticket, turn = heapq.heappop(due)
            if turn.ticket == ticket and turn.parked is not None:
                turn.poke()
        if due:
            self._timer = loop.call_at(due[0][0], self._fire)

    # --- the provider's call ----------------------------------------------------------------

    def attend(self, turn: Turn, tailed: bool) -> None:
        """A client began (or ceased) tailing the stream's task: a stream waiting for a slot
        moves to the other queue (one that is reading now asks again when it is done)."""
        if turn.tailed == tailed or turn.gone:
            return
        turn.tailed = tailed
        if turn.queued != _NONE:
            self._dequeue(turn)
            self._enqueue(turn)
            self._hand_over()

    # --- the queues ---------------------------------------------------------------------------

    def _grant(self, turn: Turn) -> None:
        turn.live, turn.demoted = True, False
        self._holders[turn] = None
        turn.poke()

    def _enqueue(self, turn: Turn) -> None:
        if turn.queued != _NONE or turn.gone:
            return
        which = _TAILED if turn.tailed else _ORDINARY
        turn.queued = which
        self._queues[which].append(turn)
        self._waiting[which] += 1
        if which == _TAILED:
            self._preempt()

    def _dequeue(self, turn: Turn) -> None:
        """Out of its queue: its entry stays there, skipped when it comes up, until the
        entries left behind outnumber the waiting ones (then the queues are swept)."""
        if turn.queued == _NONE:
            return
        self._waiting[turn.queued] -= 1
        turn.queued = _NONE
        self._stale += 1
        if self._stale > 64 and self._stale > sum(self._waiting.values()):
            for which, queue in self._queues.items():
                self._queues[which] = deque(t for t in queue if t.queued == which)
            self._stale = 0

    def _preempt(self) -> None:
        """Ask untailed live streams to hand their slots over, one per tailed stream that
        waits and is not already promised one."""
        if self.live < self.limit:
            return  # a slot is free: `_hand_over` grants it
        promised = sum(1 for t in self._holders if t.demoted)
        if promised >= self._waiting[_TAILED]:
            return
        for holder in self._holders:
            if not holder.tailed and not holder.demoted:
                holder.demoted = True
                self.preemptions += 1
                holder.poke()
                return

    def _hand_over(self) -> None:
        """Grant free slots to the waiting streams, tailed ones first."""
        for which in (_TAILED, _ORDINARY):
            queue = self._queues[which]
            while self.live < self.limit and queue:
                turn = queue.popleft()
                if turn.queued == which:
                    self._waiting[which] -= 1
                    turn.queued = _NONE
                    self._grant(turn)
                else:
                    self._stale = max(0, self._stale - 1)

    # --- figures ------------------------------------------------------------------------------

    def pause_s(self) -> float:
        """How long a stream without a slot waits between two catch-up reads: ``poll_s``,
        or longer when that many streams would read more than ``reads_per_s`` together."""
        return max(self.poll_s, self.catching_up / self.reads_per_s)

    def health(self) -> dict[str, int]:
        return {
            "max": self.limit,
            "live": self.live,
            "tailed_live": sum(1 for t in self._holders if t.tailed),
            "waiting": self._waiting[_ORDINARY] + self._waiting[_TAILED],
            "tailed_waiting": self._waiting[_TAILED],
            "preemptions": self.preemptions,
            "catching_up": self.catching_up,
            "catchup_reads": self.catchup_reads,
        }
