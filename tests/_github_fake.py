"""A fake of the parts of GitHub's REST API that ``conduit github`` uses, on 127.0.0.1.

Serves realistic JSON (the fields GitHub returns, trimmed) for one user, ``octocat``, and
two repositories, and can be switched into GitHub's failure modes: a refused token
(401), an exhausted rate limit (403 with ``X-RateLimit-Remaining: 0``, or 429), and a
server that does not answer in time. Every request is recorded with its headers.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

TOKEN = "ghp_fake0123456789"
USER = "octocat"
SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
REPOS = {"octocat/hello-world", "octo-org/api"}


def _issue(
    repo: str,
    number: int,
    title: str,
    *,
    user: str = USER,
    pr: bool = False,
    labels: tuple[str, ...] = (),
    draft: bool = False,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "url": f"https://api.github.com/repos/{repo}/issues/{number}",
        "repository_url": f"https://api.github.com/repos/{repo}",
        "html_url": f"https://github.com/{repo}/{'pull' if pr else 'issues'}/{number}",
        "id": 1000 + number,
        "node_id": f"I_kwDO{number}",
        "number": number,
        "title": title,
        "user": {"login": user, "id": 1, "type": "User"},
        "labels": [{"id": i, "name": name, "color": "d73a4a"} for i, name in enumerate(labels)],
        "state": "open",
        "locked": False,
        "assignee": None,
        "assignees": [],
        "comments": 2,
        "created_at": "2026-11-30T09:12:00Z",
        "updated_at": "2026-12-06T17:40:00Z",
        "closed_at": None,
        "author_association": "OWNER",
        "body": "…",
        "score": 1.0,
    }
    if pr:
        item["draft"] = draft
        item["pull_request"] = {
            "url": f"https://api.github.com/repos/{repo}/pulls/{number}",
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "merged_at": None,
        }
    return item


AUTHORED = [
    _issue("octocat/hello-world", 42, "Add a --shout option to hello", pr=True),
    _issue("octo-org/api", 7, "Paginate /widgets", pr=True, draft=True),
]
REVIEW = [_issue("octo-org/api", 9, "Rate-limit the export endpoint", user="hubot", pr=True)]
ASSIGNED = [
    _issue("octocat/hello-world", 40, "hello prints twice on Windows", labels=("bug",)),
    _issue("octo-org/api", 3, "Document the retry policy", user="hubot", labels=("docs",)),
]
REPO_ISSUES = {
    "octocat/hello-world": [
        _issue("octocat/hello-world", 42, "Add a --shout option to hello", pr=True),
        _issue("octocat/hello-world", 40, "hello prints twice on Windows", labels=("bug",)),
        _issue("octocat/hello-world", 38, "Translate the greeting", user="hubot"),
    ],
    "octo-org/api": [],
}
PULLS = {
    ("octocat/hello-world", "octocat:shout"): {
        "number": 42,
        "title": "Add a --shout option to hello",
        "html_url": "https://github.com/octocat/hello-world/pull/42",
        "state": "open",
        "draft": False,
        "user": {"login": USER},
        "head": {"ref": "shout", "sha": SHA, "repo": {"full_name": "octocat/hello-world"}},
        "base": {"ref": "main", "sha": "0" * 40, "repo": {"full_name": "octocat/hello-world"}},
    }
}
CHECK_RUNS = [
    ("build (ubuntu-latest)", "completed", "success"),
    ("build (windows-latest)", "completed", "failure"),
    ("lint", "completed", "success"),
    ("integration", "in_progress", None),
]
STATUSES = [("ci/circleci: docs", "success", "Your tests passed on CircleCI!")]


class GithubFake:
    """The fake's state: what it answers, and what it was asked."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok, ratelimit, ratelimit-429, secondary, slow
        self.token = TOKEN
        self.reset = int(time.time()) + 25 * 60
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = 0
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts == ["search", "issues"]:
            q = query.get("q", [""])[0]
            items = (
                AUTHORED
                if "author:@me" in q
                else REVIEW
                if "review-requested:@me" in q
                else ASSIGNED
                if "assignee:@me" in q
                else []
            )
            per_page = int(query.get("per_page", ["30"])[0])
            return 200, {
                "total_count": len(items),
                "incomplete_results": False,
                "items": items[:per_page],
            }
        if len(parts) >= 3 and parts[0] == "repos":
            repo = f"{parts[1]}/{parts[2]}"
            if repo not in REPOS:
                return 404, {
                    "message": "Not Found",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "404",
                }
            rest = parts[3:]
            if rest == ["pulls"]:
                head = query.get("head", [""])[0]
                pull = PULLS.get((repo, head))
                return 200, [pull] if pull else []
            if len(rest) == 2 and rest[0] == "pulls":
                for (r, _), pull in PULLS.items():
                    if r == repo and str(pull["number"]) == rest[1]:
                        return 200, pull
                return 404, {"message": "Not Found", "status": "404"}
            if rest == ["commits", SHA, "check-runs"]:
                runs = [
                    {
                        "id": i,
                        "name": name,
                        "head_sha": SHA,
                        "status": status,
                        "conclusion": conclusion,
                        "html_url": f"https://github.com/{repo}/runs/{i}",
                        "started_at": "2026-12-06T17:41:00Z",
                        "completed_at": None if conclusion is None else "2026-12-06T17:45:00Z",
                        "app": {"slug": "github-actions"},
                    }
                    for i, (name, status, conclusion) in enumerate(CHECK_RUNS, 1)
                ]
                return 200, {"total_count": len(runs), "check_runs": runs}
            if rest == ["commits", SHA, "status"]:
                statuses = [
                    {
                        "context": context,
                        "state": state,
                        "description": description,
                        "target_url": "https://circleci.com/gh/octocat/hello-world/1",
                        "created_at": "2026-12-06T17:42:00Z",
                    }
                    for context, state, description in STATUSES
                ]
                return 200, {
                    "state": "success",
                    "sha": SHA,
                    "total_count": len(statuses),
                    "statuses": statuses,
                }
            if rest == ["issues"]:
                return 200, REPO_ISSUES[repo]
        return 404, {"message": "Not Found", "status": "404"}


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: GithubFake

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        fake = self.fake
        # Through an HTTP proxy the request line carries the absolute URL.
        url = urllib.parse.urlsplit(self.path)
        fake.requests.append(
            (url.path + ("?" + url.query if url.query else ""), dict(self.headers))
        )
        if fake.mode == "slow":
            fake.release.wait(30)
            return
        limits = {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "4999",
            "X-RateLimit-Reset": str(fake.reset),
            "X-RateLimit-Resource": "core",
        }
        if self.headers.get("Authorization") != f"Bearer {fake.token}":
            self._send(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
            return
        if fake.mode == "ratelimit":
            limits["X-RateLimit-Remaining"] = "0"
            self._send(
                403,
                {
                    "message": "API rate limit exceeded for user ID 1.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                    "status": "403",
                },
                limits,
            )
            return
        if fake.mode == "secondary":  # too many requests at once: Retry-After, no reset
            self._send(
                403,
                {
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "status": "403",
                },
                {**limits, "Retry-After": "60"},
            )
            return
        if fake.mode == "ratelimit-429":
            limits["X-RateLimit-Remaining"] = "0"
            self._send(429, {"message": "API rate limit exceeded", "status": "429"}, limits)
            return
        code, data = fake.answer(url.path, urllib.parse.parse_qs(url.query))
        self._send(code, data, limits)


@contextlib.contextmanager
def github_fake() -> Iterator[GithubFake]:
    """A running fake; its ``url`` is the API base to configure."""
    fake = GithubFake()
    handler = type("Handler", (_Handler,), {"fake": fake})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
