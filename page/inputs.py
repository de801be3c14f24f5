"""The page's inputs: the photo decoded by the pipeline, and settings checked before they reach a handler.

Gradio's own preprocessing opens an upload with every Pillow plugin and answers a malformed API value with an opaque
error; the components here replace both with specific messages (RELIABILITY.md §2.2, §6.1 item 42).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import gradio.component_meta
import numpy as np
from gradio.data_classes import ImageData

from page.errors import user_error, user_facing_errors
from page.http_guard import CodePayload, PhotoPayload, is_plain_path, plain_path_message
from pipeline import (
    MAX_LATENT_FILE_BYTES,
    DecodedImage,
    InputImageError,
    PipelineError,
    decode_upload,
    load_latent_code,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FILE_SIZE_MB = 10  # uploads above this get HTTP 413 (RELIABILITY.md §0 item 2; a 40 MP JPEG is ~8–15 MB)
# Any request body above this gets HTTP 413 before it is read (page/http_guard.py): a photo as a base64 data: URL plus
# 1 MiB for the JSON around it (issue 11 item 7).
MAX_REQUEST_BYTES = MAX_FILE_SIZE_MB * 1024 * 1024 * 4 // 3 + 1024 * 1024
NO_PHOTO_MESSAGE = "Please upload a photo (or pick one of the examples) first."


def read_user_code(path: str | None) -> np.ndarray | None:
    """Validate an uploaded W+ code file. Messages never name the file (its name is user-controlled)."""
    if not path:
        return None
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_LATENT_FILE_BYTES + 1)  # one byte more, so an oversized file is reported as such
    except OSError as err:
        raise PipelineError("The W+ code file could not be read. Please upload it again.") from err
    return load_latent_code(data)


def data_url_bytes(url: str) -> bytes:
    """The payload of a base64 ``data:`` image URL (sent by some clients), bounded like a file upload."""
    header, _, payload = url.partition(",")
    base64_limit = MAX_FILE_SIZE_MB * 1024 * 1024 * 4 // 3 + 4
    if not header.endswith(";base64") or len(payload) > base64_limit:
        raise InputImageError(f"Please upload the photo as a file (JPEG, PNG or WebP, at most {MAX_FILE_SIZE_MB} MB).")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputImageError("The photo data could not be read. Please upload the photo as a file.") from err


@contextmanager
def no_pyi_stubs() -> Iterator[None]:
    """Keep Gradio from writing a ``.pyi`` stub while a component subclass is defined.

    Gradio's component metaclass writes a stub next to the module of every component subclass (a convenience for
    custom-component packages); here that would be a ``page/inputs.pyi`` in the repository at every import.
    """
    original = gradio.component_meta.create_or_modify_pyi
    gradio.component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        gradio.component_meta.create_or_modify_pyi = original


with no_pyi_stubs():

    class SafeImage(gr.Image):
        """gr.Image whose upload is decoded by :func:`pipeline.faces.decode.decode_upload`, not Gradio's Pillow call.

        Gradio's own preprocess opens a file with every Pillow plugin before the event function runs, so undecodable
        files and bombs end as an opaque error (RELIABILITY.md §2.2). Here the event function receives a
        :class:`~pipeline.faces.decode.DecodedImage` (or None), and every bad upload becomes a specific message. A
        subclass (not a patched instance) because Gradio rebuilds a component from its class when an event updates it.
        """

        is_template = True  # the browser renders it with gr.Image's front end (Gradio names it after the parent)
        data_model = PhotoPayload  # a plain path from gradio_client gets "wrap it with handle_file"

        def preprocess(self, payload: ImageData | None) -> DecodedImage | None:  # type: ignore[override]
            """Decode the uploaded file (Gradio has already checked that it is in its upload folder)."""
            if payload is None:
                return None
            with user_facing_errors():
                if is_plain_path(payload):
                    raise InputImageError(plain_path_message("photo"))
                if payload.path:
                    return decode_upload(payload.path)
                if payload.url and payload.url.startswith("data:"):
                    return decode_upload(data_url_bytes(payload.url))
                raise InputImageError(NO_PHOTO_MESSAGE)

    class CodeFile(gr.File):
        """gr.File for the W+ code; a plain path from gradio_client gets "wrap it with handle_file"."""

        is_template = True

        # Always CodePayload (the upload is one file). gr.File.__init__ assigns FileData, so the setter ignores it; an
        # __init__ override would hide gr.File's signature, from which Gradio builds the component's config.
        @property
        def data_model(self) -> type[CodePayload]:  # type: ignore[override]
            """The payload model: a bare string from gradio_client is marked, not refused by validation."""
            return CodePayload

        @data_model.setter
        def data_model(self, _value: object) -> None:
            pass

        def preprocess(self, payload: Any) -> Any:
            """Refuse a bare path sent by gradio_client, then Gradio's own preprocess."""
            if is_plain_path(payload):
                raise user_error(plain_path_message("W+ code file"))
            return super().preprocess(payload)

    class SettingSlider(gr.Slider):
        """gr.Slider that answers a malformed API value with :func:`checked_setting`'s message."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's bounds check."""
            expected = number_range(self.minimum, self.maximum)
            return checked_setting(self.label, expected, is_finite_number(payload), super().preprocess, payload)

    class SettingNumber(gr.Number):
        """gr.Number that answers a malformed API value with :func:`checked_setting`'s message."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's bounds check and rounding."""
            expected = number_range(self.minimum, self.maximum)
            return checked_setting(self.label, expected, is_finite_number(payload), super().preprocess, payload)

    class SettingCheckbox(gr.Checkbox):
        """gr.Checkbox that accepts only true or false (Gradio passes any value through)."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type."""
            return checked_setting(self.label, "true or false", isinstance(payload, bool), super().preprocess, payload)

    class SettingRadio(gr.Radio):
        """gr.Radio that answers a malformed API value with :func:`checked_setting`'s message."""

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's choices check."""
            expected = "one of " + ", ".join(f"“{value}”" for _, value in self.choices)
            return checked_setting(self.label, expected, isinstance(payload, str), super().preprocess, payload)

    class SettingDropdown(gr.Dropdown):
        """A multiselect gr.Dropdown of numbers; a malformed API value gets :func:`checked_setting`'s message.

        Gradio itself lets ``true`` through (it equals the choice 1), which the handler cannot iterate.
        """

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            """Check the type, then Gradio's choices check."""
            expected = "a list of numbers from " + ", ".join(str(value) for _, value in self.choices)
            valid = payload is None or (isinstance(payload, list) and all(is_finite_number(item) for item in payload))
            return checked_setting(self.label, expected, valid, super().preprocess, payload)


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is an int or float (not a bool) and finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number_range(minimum: float | None, maximum: float | None) -> str:
    """The phrase "a number from A to B" (open-ended when a bound is missing)."""

    def plain(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else f"{value:g}"

    if minimum is None and maximum is None:
        return "a finite number"
    if minimum is None:
        return f"a number up to {plain(maximum)}"  # type: ignore[arg-type]
    if maximum is None:
        return f"a number from {plain(minimum)}"
    return f"a number from {plain(minimum)} to {plain(maximum)}"


def checked_setting(
    label: str | None, expected: str, valid: bool, preprocess: Callable[[Any], Any], payload: Any
) -> Any:
    """Preprocess one setting sent by the page or the API, refusing a malformed value with a message of ours.

    Gradio answers a wrong type with an opaque "upstream Gradio app has raised an exception" (its bounds check compares
    a string with a number), lets some values through (a checkbox takes anything), and its own messages repeat the
    value unescaped. Ours names the control and what it takes, never the value (RELIABILITY.md §6.1 item 42).

    Raises:
        gr.Error: the value has the wrong type or is out of range.
    """
    message = f"The value sent for “{label}” is not valid: it must be {expected}."
    if not valid:
        raise user_error(message)
    try:
        return preprocess(payload)
    except Exception as err:  # gr.Error (out of range, not a choice) or TypeError/ValueError from Gradio's checks
        logger.info("refused a value for %s: %s", label, type(err).__name__)
        raise user_error(message) from None


def same_parameters_as(model: Callable[..., Any]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give an event handler ``model``'s parameter list.

    Gradio reads the API's parameter names, and where to inject the progress tracker, from the signature, and passes
    every value positionally; so a handler written as ``(self, photo, *values)`` serves the same inputs as ``model``.
    """

    def decorate(handler: Callable[..., T]) -> Callable[..., T]:
        handler.__signature__ = inspect.signature(model)  # type: ignore[attr-defined]
        return handler

    return decorate
