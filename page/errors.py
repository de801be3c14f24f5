"""How the page reports a failure: only our own messages reach users, everything else is logged.

Gradio shows a ``gr.Error``'s text to the user and hides any other exception (``show_error=False``); these helpers turn
every failure into such a message (RELIABILITY.md §0 item 5, §0 item 11).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr
import torch

from pipeline import PipelineError

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = (
    "Something went wrong on our side while processing this photo. Please try again; if it keeps happening, try "
    "another photo or the default settings."
)
OUT_OF_MEMORY_MESSAGE = (
    "The server ran out of memory (it may be busy, or the photo or the settings too demanding). Please try again in "
    "a moment, or with a smaller photo or the default settings."
)
STORAGE_MESSAGE = (
    "The server could not save the result (its temporary storage is full or not writable). Please try again in a few "
    "minutes."
)


def user_error(message: str) -> gr.Error:
    """A gr.Error for the user, as a sentence; HTML-escaped because Gradio renders error messages as HTML."""
    return gr.Error(html.escape(message[:1].upper() + message[1:], quote=False), print_exception=False)


@contextmanager
def user_facing_errors() -> Iterator[None]:
    """Turn every failure into a gr.Error: ours verbatim, anything else generic (logged here with its traceback)."""
    try:
        yield
    except gr.Error:
        raise
    except PipelineError as err:
        raise user_error(str(err)) from None
    except (torch.OutOfMemoryError, MemoryError):
        logger.exception("out of memory")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # RELIABILITY.md §0 item 11: free the cache so the next request can run
        raise user_error(OUT_OF_MEMORY_MESSAGE) from None
    except Exception:
        logger.exception("unexpected failure while processing a photo")
        raise user_error(INTERNAL_ERROR_MESSAGE) from None


@contextmanager
def storage_errors() -> Iterator[None]:
    """Report a failure to write the result files (disk full, folder not writable) as such; the cause is logged."""
    try:
        yield
    except OSError as err:
        logger.exception("could not write the result files")
        raise PipelineError(STORAGE_MESSAGE) from err
