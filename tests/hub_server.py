"""A local stand-in for the Hugging Face hub, enough for huggingface_hub's download client.

    with HubServer({"timm/resnet18.a1_in1k": {"model.safetensors": data}}) as hub:
        env = {"HF_ENDPOINT": hub.url, ...}      # huggingface_hub (and timm through it) now download from here
        hub.requests                             # [(method, path), ...] in the order received

What the client asks for, and what it reads from the answers:
    HEAD|GET /{repo}/resolve/{revision}/{filename}
        200 with X-Repo-Commit (the commit the revision points at), ETag (quoted sha256 of the file,
        as the hub sends for LFS files, with X-Linked-Etag and X-Linked-Size) and Content-Length; the
        body on GET (a `Range: bytes=N-` request gets 206 and the rest, for resumed downloads).
        404 with X-Error-Code: EntryNotFound (and X-Repo-Commit) for a file the repository lacks,
        RevisionNotFound for an unknown revision, 401 with RepoNotFound for an unknown repository:
        the client turns these codes into its RemoteEntryNotFoundError, RevisionNotFoundError and
        RepositoryNotFoundError.
    GET /api/models/{repo}[/revision/{revision}]
        the model's info: id, sha and siblings (its files).
    GET /api/agent-harnesses
        the registry huggingface_hub >= 1.x reads once for its user agent: served empty.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = hashlib.sha1(b"automodel test hub").hexdigest()
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/?]+)(?:/revision/(?P<rev>[^/?]+))?")


class HubServer:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path))
                self._answer(body=False)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                self._answer(body=True)

            def _send(self, status: int, headers: dict[str, str], payload: bytes = b"", body: bool = True):
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _error(self, status: int, code: str, message: str, body: bool, commit: bool = False):
                headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
                if commit:
                    headers["X-Repo-Commit"] = COMMIT
                self._send(status, headers, json.dumps({"error": message}).encode(), body)

            def _answer(self, body: bool):
                if self.path.split("?")[0] == "/api/agent-harnesses":
                    empty = json.dumps({"standardEnvVars": [], "harnesses": {}}).encode()
                    return self._send(200, {"Content-Type": "application/json"}, empty, body)
                api = _API.match(self.path)
                if api:
                    files = hub.repos.get(api["repo"])
                    if files is None:
                        return self._error(401, "RepoNotFound", "Repository not found", body)
                    info = {"id": api["repo"], "modelId": api["repo"], "sha": COMMIT,
                            "siblings": [{"rfilename": f} for f in sorted(files)]}
                    return self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)
                m = _RESOLVE.match(self.path)
                if not m:
                    return self._error(404, "EntryNotFound", "no such route", body)
                files = hub.repos.get(m["repo"])
                if files is None:
                    return self._error(401, "RepoNotFound", "Repository not found", body)
                if m["rev"] not in ("main", COMMIT):
                    return self._error(404, "RevisionNotFound", "Invalid rev id", body)
                data = files.get(m["file"])
                if data is None:
                    return self._error(404, "EntryNotFound", "Entry not found", body, commit=True)
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                headers = {"X-Repo-Commit": COMMIT, "ETag": etag, "X-Linked-Etag": etag,
                           "X-Linked-Size": str(len(data)), "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                start = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                if start and int(start[1]) < len(data):
                    lo = int(start[1])
                    headers["Content-Range"] = f"bytes {lo}-{len(data) - 1}/{len(data)}"
                    return self._send(206, headers, data[lo:], body)
                self._send(200, headers, data, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
