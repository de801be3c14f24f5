"""HTTP guarding of the public app: bounded request bodies and a clear answer to a plain path from gradio_client.

Two pieces that sit in front of the page's own checks (issue 11 item 7; RELIABILITY.md §0 item 2):

- :class:`RequestBodyLimit`, a small ASGI middleware on every route: a request that announces a larger body
  (``Content-Length``) is answered with HTTP 413 before a byte of it is read; a chunked body is counted as it arrives
  and cut off at the limit. Gradio's own ``max_file_size`` covers only ``/gradio_api/upload``; without this, a JSON
  route such as ``/gradio_api/queue/join`` would read a 200 MB ``data:`` URL whole.
- :class:`PhotoPayload` / :class:`CodePayload`, Gradio data models that mark a bare string (what gradio_client sends
  when a file path is passed without ``handle_file``), so the component answers with :func:`plain_path_message`
  instead of a validation error that reaches the user as "The upstream Gradio app has raised an exception".
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gradio.data_classes import FileData, ImageData
from pydantic import model_validator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

HTTP_PAYLOAD_TOO_LARGE = 413
PLAIN_PATH_MESSAGE = (
    "The {what} was sent as a plain file path, which the server cannot open. With gradio_client, wrap it with "
    "handle_file: client.predict(handle_file({example!r}), …)."
)


def too_large_message(max_bytes: int) -> str:
    """The 413 response text."""
    return f"The request is too large (the limit is {max_bytes / 1024 / 1024:.0f} MB). Please send a smaller photo."


class BodyTooLargeError(HTTPException):
    """Raised inside the app's ``receive`` when a body without ``Content-Length`` passes the limit.

    An HTTPException, so FastAPI's body parsing passes it on (rather than answering 400) and Starlette's exception
    middleware answers 413; if it reaches :class:`RequestBodyLimit` itself, the middleware answers.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=HTTP_PAYLOAD_TOO_LARGE, detail=too_large_message(max_bytes))


class RequestBodyLimit:
    """ASGI middleware: refuse request bodies above ``max_bytes`` with HTTP 413, before reading them.

    Args:
        app: the wrapped ASGI app.
        max_bytes: the largest body accepted on any route, in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, refusing an oversized body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            logger.info("refused a %d-byte request body on %s", announced, scope.get("path", "?"))
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            logger.info("cut off a chunked request body above %d bytes on %s", self.max_bytes, scope.get("path"))
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": too_large_message(self.max_bytes)}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": HTTP_PAYLOAD_TOO_LARGE, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# What a bare string payload is turned into. Raising from a pydantic validator would reach the user as a validation
# error (gr.Error is a ValueError, which pydantic wraps), so the validator marks the payload and the component's
# preprocess, which Gradio lets answer with gr.Error, refuses it with :func:`plain_path_message`.
PLAIN_PATH_MARK = "gradio-client-plain-path:"


def plain_path_message(what: str) -> str:
    """The message for a bare path sent where a file was expected ("photo" or "W+ code file")."""
    example = "portrait.jpg" if what == "photo" else "w_plus.npy"
    return PLAIN_PATH_MESSAGE.format(what=what, example=example)


def is_plain_path(payload: object) -> bool:
    """Whether a validated payload is the mark left for a bare string."""
    return PLAIN_PATH_MARK in (getattr(payload, "path", None), getattr(payload, "url", None))


class PhotoPayload(ImageData):
    """Gradio's ImageData; a bare string becomes a marked payload (see :data:`PLAIN_PATH_MARK`)."""

    @model_validator(mode="before")
    @classmethod
    def mark_plain_path(cls, data: Any) -> Any:
        """Replace a string payload (never echoed back) by the mark."""
        return {"url": PLAIN_PATH_MARK, "meta": {"_type": "gradio.FileData"}} if isinstance(data, str) else data


class CodePayload(FileData):
    """Gradio's FileData for the W+ code upload; a bare string becomes a marked payload."""

    @model_validator(mode="before")
    @classmethod
    def mark_plain_path(cls, data: Any) -> Any:
        """Replace a string payload (never echoed back) by the mark."""
        return {"path": PLAIN_PATH_MARK, "meta": {"_type": "gradio.FileData"}} if isinstance(data, str) else data
