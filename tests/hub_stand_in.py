"""A local stand-in for the Hugging Face Hub, so `huggingface_hub`, `transformers` and `datasets` run their real
download code in tests (they all follow `HF_ENDPOINT`).

No maintained package does this offline: `hf-local-hub` needs a Go binary its wheel does not ship, `olah` is
a caching proxy in front of the real Hub. This serves what those libraries ask for, and nothing more:

- repo info: `GET /api/{models,datasets}/{repo}[/revision/{rev}]` (commit `sha`, `siblings`);
- tree: `GET /api/{models,datasets}/{repo}/tree/{rev}[/{path}]` (files with size and oid);
- files: `HEAD`/`GET /[datasets/]{repo}/resolve/{rev}/{file}` with the `X-Repo-Commit`, `ETag` and
  `Content-Length` headers (and `Range` on GET);
- errors the way the Hub signals them (`X-Error-Code`): RepoNotFound (401 unauthenticated), RevisionNotFound,
  EntryNotFound (404), GatedRepo (401).

It listens on 127.0.0.1 only. `hang = True` makes it accept connections and never answer (until stopped), to
test client timeouts; `move(repo, n)` points `main` at another commit.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_API_KINDS = {"models": "model", "datasets": "dataset"}


@dataclass
class Repo:
    """One repo: its commits in order (each a {path: bytes} snapshot), which one `main` points at, and access."""

    kind: str  # "model" or "dataset"
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    main: int = 0
    gated: bool = False

    def add_commit(self, files: Mapping[str, bytes]) -> str:
        """Append a commit (its sha derives from the content and position); `main` stays where it is."""
        h = hashlib.sha1(str(len(self.commits)).encode())
        for name in sorted(files):
            h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        sha = h.hexdigest()
        self.commits.append((sha, dict(files)))
        return sha

    def snapshot(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        """The (sha, files) that `rev` (a branch name or a full commit sha) names, or None."""
        if rev in ("main", "refs/heads/main"):
            return self.commits[self.main]
        return next((c for c in self.commits if c[0] == rev), None)


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative POSIX path: what `save_pretrained` wrote, as one commit."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class HubStandIn:
    """The server; `with HubStandIn() as hub:` starts it on a free loopback port and stops it on exit."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.hang = False
        self.requests: list[str] = []  # "METHOD path" of every request, for tests that count network use
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0  # a restart takes the same port: clients keep the endpoint they were given

    # -- content ------------------------------------------------------------------------------------

    def repo(self, repo_id: str, kind: str = "model", *, gated: bool = False) -> Repo:
        key = (kind, repo_id)
        if key not in self.repos:
            self.repos[key] = Repo(kind, gated=gated)
        return self.repos[key]

    def move(self, repo_id: str, commit: int, kind: str = "model") -> str:
        """Point `main` of a repo at its `commit`-th commit (0-based); returns that commit's sha."""
        repo = self.repos[(kind, repo_id)]
        repo.main = commit
        return repo.commits[commit][0]

    # -- life ---------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "the stand-in is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubStandIn:
        self._stop.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
        self._port = self._server.server_address[1]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hub-stand-in",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the port (hanging requests are released and closed too)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read hub.requests instead
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            if hub.hang:
                hub._stop.wait(60)  # bounded: the fixture stops the server long before
                self.close_connection = True
                return
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in _API_KINDS:
                self._api(_API_KINDS[parts[1]], "/".join(parts[2:4]), parts[4:], body)
            elif "resolve" in parts:
                i = parts.index("resolve")
                kind, repo_parts = ("dataset", parts[1:i]) if parts[0] == "datasets" else ("model", parts[:i])
                self._resolve(kind, "/".join(repo_parts), parts[i + 1:], body)
            else:
                self._error(404, "", "not something the stand-in serves", body)

        def _lookup(self, kind: str, repo_id: str, rev: str, body: bool) -> tuple[Repo, str, dict[str, bytes]] | None:
            repo = hub.repos.get((kind, repo_id))
            if repo is None:
                self._error(401, "RepoNotFound", "Repository not found", body)
                return None
            if repo.gated:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it "
                                              "and be authenticated to access it. Please log in.", body)
                return None
            snap = repo.snapshot(rev)
            if snap is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body)
                return None
            return repo, snap[0], snap[1]

        def _api(self, kind: str, repo_id: str, rest: list[str], body: bool) -> None:
            rev = "main"
            if rest[:1] in (["revision"], ["tree"]) and len(rest) >= 2:
                rev = rest[1]
            found = self._lookup(kind, repo_id, rev, body)
            if found is None:
                return
            _, sha, files = found
            if rest[:1] == ["tree"]:
                prefix = "/".join(rest[2:])
                recursive = "recursive=true" in (urllib.parse.urlsplit(self.path).query or "").lower()
                self._json(_tree(files, prefix, recursive), body)
                return
            self._json({"_id": sha, "id": repo_id, "sha": sha, "private": False, "gated": False, "disabled": False,
                        "lastModified": "2026-01-01T00:00:00.000Z", "tags": [], "cardData": {},
                        "siblings": [{"rfilename": name} for name in sorted(files)]}, body)

        def _resolve(self, kind: str, repo_id: str, rest: list[str], body: bool) -> None:
            if len(rest) < 2:
                self._error(404, "EntryNotFound", "no file named", body)
                return
            found = self._lookup(kind, repo_id, rest[0], body)
            if found is None:
                return
            _, sha, files = found
            name = "/".join(rest[1:])
            if name not in files:
                self._error(404, "EntryNotFound", f"{name} does not exist on this commit", body, commit=sha)
                return
            data = files[name]
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            status, start, end = 200, 0, len(data)
            ranged = self.headers.get("Range", "")
            if body and ranged.startswith("bytes="):
                lo, _, hi = ranged[6:].partition("-")
                start, end = int(lo or 0), min(len(data), int(hi) + 1 if hi else len(data))
                status = 206
            self.send_response(status)
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.send_header("Content-Length", str(end - start if body else len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data[start:end])

        def _json(self, payload: Any, body: bool) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, body: bool, commit: str | None = None) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


def _tree(files: Mapping[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """The tree listing of `prefix`: its files (and, unless recursive, its direct sub-folders once)."""
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    out: list[dict[str, Any]] = []
    folders: set[str] = set()
    for name in sorted(files):
        if not name.startswith(base):
            continue
        rel = name[len(base):]
        if "/" in rel and not recursive:
            folders.add(base + rel.split("/")[0])
            continue
        if recursive:
            parts = name.split("/")
            folders.update("/".join(parts[:i]) for i in range(len(base.split("/")), len(parts)))
        data = files[name]
        out.append({"type": "file", "path": name, "size": len(data),
                    "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()})
    out.extend({"type": "directory", "path": f, "size": 0, "oid": hashlib.sha1(f.encode()).hexdigest()}
               for f in sorted(folders) if f)
    return out
