"""JSON shapes of the GitHub simulator: users, repositories, workflows, runs, jobs.

Each builder mirrors the key set of the real examples (contracts:
``webhooks/examples/workflow_run/requested.payload.json``,
``workflow_job/*.payload.json``, ``ping/payload.json`` and the ``workflow-run``/``job``
examples of ``rest-actions.openapi.json``), so that the simulator's output validates
against octokit's strict webhook schemas and GitHub's OpenAPI schemas.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

API = "https://api.github.com"
WEB = "https://github.com"


def iso(when: datetime | None) -> str | None:
    """GitHub's timestamp form: second resolution, ``Z``."""
    if when is None:
        return None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, ident: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode()


@dataclass
class SimRepo:
    owner: str
    name: str
    id: int
    owner_id: int
    created_at: datetime

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class SimWorkflow:
    repo: SimRepo
    id: int
    file: str
    name: str
    #: declared workflow_dispatch inputs; None accepts any input
    inputs: list[str] | None = None
    #: run-name template; ``${{ inputs.NAME }}`` is replaced (GitHub's default is the name)
    run_name: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def path(self) -> str:
        return f".github/workflows/{self.file}"


def user(login: str, ident: int, kind: str = "User") -> dict[str, Any]:
    base = f"{API}/users/{login}"
    return {
        "login": login,
        "id": ident,
        "node_id": node_id("User", ident),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{ident}?v=4",
        "gravatar_id": "",
        "url": base,
        "html_url": f"{WEB}/{login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": kind,
        "site_admin": False,
    }


_REPO_URLS = {
    "forks_url": "/forks",
    "keys_url": "/keys{/key_id}",
    "collaborators_url": "/collaborators{/collaborator}",
    "teams_url": "/teams",
    "hooks_url": "/hooks",
    "issue_events_url": "/issues/events{/number}",
    "events_url": "/events",
    "assignees_url": "/assignees{/user}",
    "branches_url": "/branches{/branch}",
    "tags_url": "/tags",
    "blobs_url": "/git/blobs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "trees_url": "/git/trees{/sha}",
    "statuses_url": "/statuses/{sha}",
    "languages_url": "/languages",
    "stargazers_url": "/stargazers",
    "contributors_url": "/contributors",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "commits_url": "/commits{/sha}",
    "git_commits_url": "/git/commits{/sha}",
    "comments_url": "/comments{/number}",
    "issue_comment_url": "/issues/comments{/number}",
    "contents_url": "/contents/{+path}",
    "compare_url": "/compare/{base}...{head}",
    "merges_url": "/merges",
    "archive_url": "/{archive_format}{/ref}",
    "downloads_url": "/downloads",
    "issues_url": "/issues{/number}",
    "pulls_url": "/pulls{/number}",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "labels_url": "/labels{/name}",
    "releases_url": "/releases{/id}",
    "deployments_url": "/deployments",
}


def repository_lite(repo: SimRepo) -> dict[str, Any]:
    """``repository-lite`` (webhook run) / ``minimal-repository`` (REST run) key set."""
    base = f"{API}/repos/{repo.full_name}"
    out: dict[str, Any] = {
        "id": repo.id,
        "node_id": node_id("Repository", repo.id),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": False,
        "owner": user(repo.owner, repo.owner_id, "Organization"),
        "html_url": f"{WEB}/{repo.full_name}",
        "description": None,
        "fork": False,
        "url": base,
    }
    out.update({key: base + suffix for key, suffix in _REPO_URLS.items()})
    return out


def repository_full(repo: SimRepo, now: datetime) -> dict[str, Any]:
    """The top-level ``repository`` of a delivery (``common/repository.schema.json``)."""
    out = repository_lite(repo)
    out.update(
        {
            "created_at": iso(repo.created_at),
            "updated_at": iso(now),
            "pushed_at": iso(now),
            "git_url": f"git://github.com/{repo.full_name}.git",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "clone_url": f"{WEB}/{repo.full_name}.git",
            "svn_url": f"{WEB}/{repo.full_name}",
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": None,
            "has_issues": True,
            "has_projects": False,
            "has_downloads": True,
            "has_wiki": False,
            "has_pages": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": 0,
            "license": None,
            "forks": 0,
            "open_issues": 0,
            "watchers": 0,
            "default_branch": "main",
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "public",
            "custom_properties": {},
        }
    )
    return out


def workflow(wf: SimWorkflow) -> dict[str, Any]:
    """The ``workflow`` of a workflow_run delivery."""
    repo = wf.repo.full_name
    return {
        "badge_url": f"{WEB}/{repo}/workflows/{wf.name}/badge.svg",
        "created_at": iso(wf.created_at),
        "html_url": f"{WEB}/{repo}/blob/main/{wf.path}",
        "id": wf.id,
        "name": wf.name,
        "node_id": node_id("Workflow", wf.id),
        "path": wf.path,
        "state": "active",
        "updated_at": iso(wf.created_at),
        "url": f"{API}/repos/{repo}/actions/workflows/{wf.id}",
    }


def head_commit(sha: str, message: str, when: datetime) -> dict[str, Any]:
    return {
        "id": sha,
        "tree_id": sha[::-1],
        "message": message,
        "timestamp": iso(when),
        "author": {"name": "Octo Cat", "email": "octocat@example.com"},
        "committer": {"name": "GitHub", "email": "noreply@github.com"},
    }


def deployment(
    repo: SimRepo, ident: int, environment: str, sha: str, ref: str, when: datetime
) -> dict[str, Any]:
    """The ``deployment`` of a workflow_job delivery for a job that targets an environment
    (contracts: ``workflow_job/queued.with-deployment.payload.json``;
    ``common/deployment.schema.json``)."""
    base = f"{API}/repos/{repo.full_name}"
    return {
        "url": f"{base}/deployments/{ident}",
        "id": ident,
        "node_id": node_id("Deployment", ident),
        "task": "deploy",
        "original_environment": environment,
        "environment": environment,
        "description": None,
        "created_at": iso(when),
        "updated_at": iso(when),
        "statuses_url": f"{base}/deployments/{ident}/statuses",
        "repository_url": base,
        "creator": user("octocat", 1),
        "sha": sha,
        "ref": ref,
        "payload": {},
        "transient_environment": False,
        "production_environment": False,
        "performed_via_github_app": None,
    }
