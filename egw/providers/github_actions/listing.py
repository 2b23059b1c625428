"""`RunListing`: the runs of a repository read in pages of 100, each page ETag-cached.

GitHub's primary rate limit (5,000 requests an hour for a token) cannot hold one request per
followed run: 1,000 runs polled every 15 s would need 240,000. The reconciler instead lists a
repository's runs (``GET /repos/{owner}/{repo}/actions/runs?created=>=…&per_page=100``, newest
first, following the ``Link`` header; tests/samples/github/NOTES.md "Pagination") and routes each
listed run to the followed run of its id. Each page is asked with ``If-None-Match`` and the ETag
of its last answer: "Making a conditional request does not count against your primary rate limit
if a 304 response is returned and the request was made while correctly authorized with an
Authorization header" (github/docs, content/rest/using-the-rest-api/
best-practices-for-using-the-rest-api.md, "Use conditional requests if appropriate"). An
unchanged page therefore costs nothing, and only its changed pages cost a repository's round.

The ``created`` filter starts at the oldest followed run (less the clock skew), so the list ends
with it; paging stops early once every followed run was seen. A filtered list holds at most 1,000
runs (the operation's description), so with more runs followed in the repository the list is
not filtered (newest first, its pages until every followed run was seen). A run a listing did
not show (runs moved between pages while they were read, or past the pages read) is left for
the caller to read alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, urlencode, urlsplit

from egw.providers.github_actions.api import GitHubAPI
from egw.wire import github as gh

#: a filtered list holds at most 1,000 runs (rest-actions.openapi.json,
#: actions/list-workflow-runs-for-repo); above this many followed runs the list is not filtered
FILTERED_MAX = 900
#: pages read beyond the followed runs' own (the repository's other runs share the pages)
SPARE_PAGES = 10


@dataclass(frozen=True, slots=True)
class Page:
    """One listed page as last answered: its ETag, runs and next page."""

    etag: str | None
    runs: tuple[gh.Run, ...]
    next_url: str | None


@dataclass(frozen=True, slots=True)
class Listing:
    """What one listing of a repository saw: the runs by id, and what it cost (a 304 is free)."""

    runs: dict[int, gh.Run]
    requests: int
    not_modified: int


class RunListing:
    """The ETag cache of listed pages, by URL (a page's URL includes its filter and number)."""

    def __init__(self, api: GitHubAPI) -> None:
        self._api = api
        self._pages: dict[str, Page] = {}

    async def list_repo(
        self, owner: str, repo: str, since: datetime | None, want: set[int]
    ) -> Listing:
        """The runs of ``owner/repo`` created since ``since`` (all, if None), until every run in
        ``want`` was seen or the pages end. Raises `ProviderError`/`ProviderUnavailable` as
        `GitHubAPI.request` does."""
        if len(want) > FILTERED_MAX:
            since = None
        url0 = gh.repo_path(owner, repo) + "/actions/runs?" + _query(since)
        url: str | None = url0
        seen: dict[int, gh.Run] = {}
        requests = not_modified = 0
        fresh: dict[str, Page] = {}
        for _ in range(len(want) // 100 + SPARE_PAGES):
            if url is None:
                break
            cached = self._pages.get(url)
            headers = {"If-None-Match": cached.etag} if cached and cached.etag else None
            resp = await self._api.request("GET", url, headers=headers)
            requests += 1
            if resp.status == 304 and cached is not None:
                not_modified += 1
                page = cached
            else:
                self._api.raise_for(resp)
                body = resp.json()
                items = body.get("workflow_runs") if isinstance(body, Mapping) else None
                runs = tuple(gh.parse_run(i) for i in items or () if isinstance(i, Mapping))
                page = Page(resp.headers.get("etag"), runs, gh.next_link(resp.headers.get("link")))
            fresh[url] = page
            for run in page.runs:
                seen.setdefault(run.id, run)
            if want <= seen.keys():
                break
            url = page.next_url
        # forget the pages of the repository's older filters: they are never asked again
        prefix, current = gh.repo_path(owner, repo) + "/", _created(url0)
        for key in [k for k in self._pages if k.startswith(prefix) and _created(k) != current]:
            del self._pages[key]
        self._pages.update(fresh)
        return Listing(seen, requests, not_modified)


def _query(since: datetime | None) -> str:
    if since is None:
        return "per_page=100"
    return urlencode({"created": gh.created_filter(since), "per_page": "100"})


def _created(url: str) -> str | None:
    """The ``created`` filter of a listed page's URL (the same for every page of a listing)."""
    values = parse_qs(urlsplit(url).query).get("created")
    return values[0] if values else None
