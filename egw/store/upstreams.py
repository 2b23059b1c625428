"""Which task holds each upstream id, in memory, for the providers that ask (webhook intake).

A webhook receiver hears about every run of a repository, most of them not egw's:
answering those from the database (a read through aiosqlite's thread per delivery) cost more
than verifying and parsing the delivery itself (bench part "webhooks"). So the store
keeps, for each *watched* provider, a dict of its upstream ids to task ids, updated by
a listener of the `Writer` right after each commit (every change of a task's upstream
is an event, so its commit reaches listeners), before any caller of that commit
resumes (their futures' callbacks run later, from the event loop).

Exact under concurrency and restart: `watch` marks the provider first, then reads
every task of it that has an upstream id (on the read connection: committed rows
only). A commit that lands while that read is in
flight is noted by the writer (the provider is marked already) and possibly read too:
both give the same answer. So every upstream id in the database is in the index from
the moment `watch` returns; an id of a task pruned meanwhile may linger, which only
costs the caller a lookup that finds no task. Memory: one entry per task of the
watched providers still in the database (retention bounds it).
"""

from __future__ import annotations

from collections.abc import Iterable

from egw.core.model import Task
from egw.core.records import Commit
from egw.store.backend import Reads


class UpstreamIndex:
    def __init__(self) -> None:
        self._by_provider: dict[str, dict[str, str]] = {}
        #: task id -> (provider, upstream id), to forget pruned tasks
        self._holders: dict[str, tuple[str, str]] = {}

    def watches(self, provider: str) -> bool:
        return provider in self._by_provider

    def get(self, provider: str, upstream_id: str) -> str | None:
        """The task holding ``upstream_id`` (the latest submitted), None if no task does."""
        return self._by_provider[provider].get(upstream_id)

    async def watch(self, reader: Reads, provider: str) -> None:
        """Keep ``provider``'s upstream ids from now on, and load those already stored."""
        if provider in self._by_provider:
            return
        ids = self._by_provider[provider] = {}  # from here on, commits are noted
        stored: dict[str, str] = {}
        for upstream_id, task_id in await reader.upstream_ids(provider):
            stored[upstream_id] = task_id  # the latest submitted wins
        for upstream_id, task_id in stored.items():
            if upstream_id not in ids:  # else a commit noted during the read is newer
                ids[upstream_id] = task_id
                self._holders[task_id] = (provider, upstream_id)

    def on_commit(self, commit: Commit) -> None:
        """The writer's listener: see the module's docstring."""
        self.note(commit.tasks.values(), commit.pruned)

    def note(self, tasks: Iterable[Task], pruned: Iterable[str]) -> None:
        """After a commit: the upstream ids its tasks hold now, and the tasks it pruned."""
        for task in tasks:
            ids = self._by_provider.get(task.provider)
            if ids is None:
                continue
            held = self._holders.get(task.id)
            if held is not None and held[1] != task.upstream_id and ids.get(held[1]) == task.id:
                # the task's upstream id changed (a resubmit): the old run is not its own
                del ids[held[1]]
                del self._holders[task.id]
            if task.upstream_id is not None:
                ids[task.upstream_id] = task.id
                self._holders[task.id] = (task.provider, task.upstream_id)
        for task_id in pruned:
            held = self._holders.pop(task_id, None)
            if held is not None and self._by_provider[held[0]].get(held[1]) == task_id:
                del self._by_provider[held[0]][held[1]]
