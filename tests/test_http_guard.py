"""Bounded request bodies (HTTP 413 before reading, memory flat) and the handle_file message (page/http_guard.py).

The middleware is checked on its own (a tiny ASGI app) and on the real app served on loopback with the shipped
launch options and stand-in weights: a 200 MB ``data:`` URL announced to ``/gradio_api/queue/join`` is refused
without being read, on every route a client can post to, and the server's resident memory stays where it was.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from gradio_client import Client, handle_file

from page.http_guard import RequestBodyLimit, plain_path_message
from tests.serving import Served, portrait

pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

MIB = 1024 * 1024
HUGE = 200 * MIB  # the size in issue 11's report
POST_ROUTES = (
    "/gradio_api/queue/join",
    "/gradio_api/upload",
    "/gradio_api/run/predict",
    "/gradio_api/call/remove_double_chin",
    "/gradio_api/component_server",
    "/gradio_api/cancel",
    "/login",
    "/anything/else",
)


# -- the middleware alone ----------------------------------------------------------------------------------------


def run_asgi(limit: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, list[bytes], int]:
    """Drive RequestBodyLimit around an app that reads the whole body; returns (status, body parts, bytes read)."""
    read = 0

    async def app(scope: dict, receive, send) -> None:
        nonlocal read
        more = True
        while more:
            message = await receive()
            read += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return pending.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}
    asyncio.run(RequestBodyLimit(app, max_bytes=limit)(scope, receive, send))
    return sent[0]["status"], [m.get("body", b"") for m in sent[1:]], read


def test_announced_oversized_body_is_refused_unread() -> None:
    status, body, read = run_asgi(1000, [(b"content-length", b"1001")], [b"x" * 1001])
    assert status == 413 and read == 0
    assert "too large" in json.loads(body[0])["error"]


def test_chunked_oversized_body_is_cut_off_at_the_limit() -> None:
    status, _, read = run_asgi(1000, [], [b"x" * 600, b"x" * 600, b"x" * 600])
    assert status == 413 and read <= 600  # the app never saw the chunk that crossed the limit


def test_bodies_within_the_limit_pass() -> None:
    assert run_asgi(1000, [(b"content-length", b"1000")], [b"x" * 1000]) == (200, [b"ok"], 1000)
    assert run_asgi(1000, [], [b"x" * 500, b"x" * 500])[0] == 200


# -- the served app ----------------------------------------------------------------------------------------------


def resident_bytes() -> int:
    """This process's resident set size (the server runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def post_announcing(url: str, path: str, length: int, sent: bytes) -> tuple[int, bytes]:
    """POST with ``Content-Length: length`` but send only ``sent``; return the status and the response body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        )
        conn.sendall(head.encode() + sent)
        response = b""
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


def test_huge_data_url_to_the_queue_is_refused_before_reading(served: Served) -> None:
    prefix = b'{"data": [{"url": "data:image/png;base64,'
    before = resident_bytes()
    for _ in range(3):
        status, body = post_announcing(served.url, "/gradio_api/queue/join", HUGE, prefix + b"A" * 65536)
        assert status == 413 and b"too large" in body
    grown = resident_bytes() - before
    assert grown < 20 * MIB, f"server RSS {before / MIB:.0f} MiB → {(before + grown) / MIB:.0f} MiB"
    assert httpx.get(f"{served.url}/config", timeout=30).status_code == 200  # still serving


@pytest.mark.parametrize("path", POST_ROUTES)
def test_every_post_route_is_bounded(served: Served, path: str) -> None:
    limit = served.app.MAX_REQUEST_BYTES
    status, _ = post_announcing(served.url, path, limit + 1, b"{}")
    assert status == 413


def test_chunked_body_above_the_limit_gets_413(served: Served) -> None:
    limit = served.app.MAX_REQUEST_BYTES
    before = resident_bytes()

    def chunks() -> Iterator[bytes]:
        block = b"A" * MIB
        for _ in range(limit // MIB + 4):
            yield block

    try:
        response = httpx.post(f"{served.url}/gradio_api/queue/join", content=chunks(), timeout=60)
        assert response.status_code == 413
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server answered 413 and closed while the client was still sending: also refused
    assert resident_bytes() - before < limit + 20 * MIB


def test_a_photo_of_normal_size_still_works(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "portrait.png"
    portrait(tint=(10, 200, 90)).save(path)
    client = Client(served.url, verbose=False, download_files=str(tmp_path / "downloads"))
    result = client.predict(handle_file(str(path)), w_plus_code=None, api_name="/remove_double_chin")
    assert Path(result[0][1]).is_file()


def test_a_plain_path_from_gradio_client_says_to_use_handle_file(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "portrait.png"
    portrait(tint=(200, 10, 90)).save(path)
    client = Client(served.url, verbose=False, download_files=str(tmp_path / "downloads"))
    with pytest.raises(Exception, match="handle_file") as info:
        client.predict(str(path), w_plus_code=None, api_name="/remove_double_chin")
    assert plain_path_message("photo") in str(info.value)
    with pytest.raises(Exception, match="W\\+ code file was sent as a plain file path"):
        client.predict(handle_file(str(path)), w_plus_code=str(path), api_name="/remove_double_chin")
