"""A small local stand-in for the Hugging Face Hub file-resolve protocol, for download tests without network.

It answers what ``huggingface_hub`` 2.4 ``hf_hub_download`` / ``get_hf_file_metadata`` ask for (read from
``huggingface_hub/file_download.py`` and ``utils/_http.py``):

- ``HEAD {endpoint}/{repo}/resolve/{revision}/{filename}``. Every answer carries ``X-Repo-Commit``. A plain ("git")
  file answers 200 with ``ETag: "<git blob sha1>"`` and ``Content-Length``. An "LFS" file answers like the real Hub:
  ``302`` to a second server on another port (the "CDN", so the client does not follow the redirect on HEAD and reads
  the metadata from the redirect itself) with ``X-Linked-Etag: "<sha256>"`` and ``X-Linked-Size``.
- ``GET`` on the same URL (200 body, or the same 302 for LFS) and ``GET /cdn/<sha256>`` on the CDN server. ``Range:
  bytes=N-`` is honoured with 206, as ``http_get`` sends it when it resumes after a dropped connection.
- Missing repo: 401 + ``X-Error-Code: RepoNotFound``; missing revision: 404 + ``RevisionNotFound``; missing file:
  404 + ``EntryNotFound`` (the headers ``hf_raise_for_status`` maps to its exception classes).

No ``X-Xet-*`` headers or ``Link: ...xet-auth`` are sent, so the client takes its plain HTTP path; no ``/api/...``
route is needed for single-file downloads into a ``local_dir``. Tests point the client here with the ``HF_ENDPOINT``
environment variable, read by :mod:`pipeline.weights.download` at call time and passed as ``endpoint=``.

Switches for fault injection: ``corrupt`` (serve flipped bytes under the advertised checksum), ``html_instead``
(serve an HTML error page), ``stall`` (hold a HEAD or GET without answering), ``not_found`` (answer 404), ``gated``
(answer 401 ``GatedRepo`` for a repo) and a request log for counting calls.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
MAX_STALL_SECONDS = 30.0  # a stalled request is released at shutdown at the latest after this long
HTML_ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>\n"
COMMIT_LENGTH = 40  # hex digits of a git commit id


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (what the Hub sends as the ETag of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def fake_commit(repo_id: str, revision: str) -> str:
    """A stable 40-hex commit id for a branch name of a fake repo."""
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


@dataclass
class HostedFile:
    """One file of a fake repo."""

    data: bytes
    lfs: bool = True  # LFS files are served through the CDN redirect with a sha256 ETag

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake servers received."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None


@dataclass
class HubState:
    """Files and fault switches shared by the hub and CDN handlers."""

    files: dict[tuple[str, str, str], HostedFile] = field(default_factory=dict)  # (repo, commit, filename)
    branches: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, branch) -> commit
    corrupt: set[str] = field(default_factory=set)  # filenames served with flipped bytes
    html_instead: set[str] = field(default_factory=set)  # filenames served as an HTML error page
    not_found: set[str] = field(default_factory=set)  # filenames answered with 404 EntryNotFound
    gated: set[str] = field(default_factory=set)  # repo ids answered with 401 GatedRepo (access not granted)
    stall: set[str] = field(default_factory=set)  # HTTP methods ("HEAD", "GET") that never get an answer
    requests: list[LoggedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


class FakeHub:
    """Two threaded HTTP servers on 127.0.0.1 (hub + CDN) serving in-memory files; use as a context manager."""

    def __init__(self) -> None:
        self.state = HubState()
        self._hub = _make_server(self.state, "hub")
        self._cdn = _make_server(self.state, "cdn")
        self._hub.cdn_base = f"http://{HOST}:{self._cdn.server_address[1]}"  # type: ignore[attr-defined]
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for server in (self._hub, self._cdn)
        ]

    @property
    def endpoint(self) -> str:
        """Value for ``HF_ENDPOINT``."""
        return f"http://{HOST}:{self._hub.server_address[1]}"

    def add_file(
        self, repo_id: str, filename: str, data: bytes, *, revision: str = "main", lfs: bool = True
    ) -> HostedFile:
        """Host ``data`` as ``filename`` of ``repo_id`` at a branch name or a 40-hex commit id."""
        is_commit = len(revision) == COMMIT_LENGTH and all(c in "0123456789abcdef" for c in revision)
        commit = revision if is_commit else fake_commit(repo_id, revision)
        if not is_commit:
            self.state.branches[(repo_id, revision)] = commit
        hosted = HostedFile(data=data, lfs=lfs)
        self.state.files[(repo_id, commit, filename)] = hosted
        return hosted

    @property
    def requests(self) -> list[LoggedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    def request_count(self) -> int:
        return len(self.requests)

    def clear_log(self) -> None:
        with self.state.lock:
            self.state.requests.clear()

    def start(self) -> FakeHub:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.state.release.set()  # let stalled handlers return
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _make_server(state: HubState, role: str) -> ThreadingHTTPServer:
    handler = type(f"{role.title()}Handler", (_Handler,), {"state": state, "role": role})
    server = ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    server.block_on_close = False
    return server


class _Handler(BaseHTTPRequestHandler):
    state: HubState
    role: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    # -- routing -------------------------------------------------------------------------------------------------

    def _answer(self, *, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.state.lock:
            self.state.requests.append(LoggedRequest(self.role, self.command, path, self.headers.get("Range")))
        if self.command in self.state.stall:
            self.state.release.wait(MAX_STALL_SECONDS)
            self.close_connection = True
            return
        if self.role == "cdn":
            self._answer_cdn(path, send_body=send_body)
        else:
            self._answer_resolve(path, send_body=send_body)

    def _answer_resolve(self, path: str, *, send_body: bool) -> None:
        head, sep, rest = path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        if not sep or not filename:
            self._error(404, None, {})
            return
        repo_id = head
        if repo_id in self.state.gated:
            self._error(401, "GatedRepo", {})
            return
        if not any(key[0] == repo_id for key in self.state.files):
            self._error(401, "RepoNotFound", {})
            return
        commit = self.state.branches.get((repo_id, revision), revision)
        if not any(key[:2] == (repo_id, commit) for key in self.state.files):
            self._error(404, "RevisionNotFound", {})
            return
        hosted = self.state.files.get((repo_id, commit, filename))
        if hosted is None or filename in self.state.not_found:
            self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
            return
        if hosted.lfs:
            self.send_response(302)
            self.send_header("Location", f"{self.server.cdn_base}/cdn/{hosted.sha256}/{filename}")  # type: ignore[attr-defined]
            self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Linked-Etag", f'"{hosted.sha256}"')
            self.send_header("X-Linked-Size", str(len(hosted.data)))
            self.send_header("ETag", f'"{hosted.sha256}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_content(filename, hosted.data, {"X-Repo-Commit": commit}, git_blob_sha1(hosted.data), send_body)

    def _answer_cdn(self, path: str, *, send_body: bool) -> None:
        _, _, rest = path.partition("/cdn/")
        sha256, _, filename = rest.partition("/")
        for (_repo, _commit, name), hosted in self.state.files.items():
            if hosted.lfs and hosted.sha256 == sha256 and name == filename:
                self._send_content(filename, hosted.data, {}, sha256, send_body)
                return
        self._error(404, None, {})

    # -- responses -----------------------------------------------------------------------------------------------

    def _send_content(self, filename: str, data: bytes, extra: dict[str, str], etag: str, send_body: bool) -> None:
        # HEAD advertises the true file; only the body that a GET receives is damaged.
        if send_body and filename in self.state.html_instead:
            data = HTML_ERROR_PAGE
        elif send_body and filename in self.state.corrupt:
            middle = len(data) // 2  # keep the format header intact: only a checksum can tell
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]
        start = 0
        status = 200
        byte_range = self.headers.get("Range")
        if byte_range and byte_range.startswith("bytes=") and self.command == "GET":
            start = int(byte_range.removeprefix("bytes=").split("-", 1)[0] or 0)
            status = 206
        body = data[start:]
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, status: int, error_code: str | None, extra: dict[str, str]) -> None:
        body = b'{"error": "not found"}'
        self.send_response(status)
        if error_code is not None:
            self.send_header("X-Error-Code", error_code)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
