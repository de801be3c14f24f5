"""Exceptions whose messages are written for the people who see them (UI users and CLI users).

Every message names what was wrong and what to do about it. No message contains a traceback, and messages about
user uploads never echo file-system paths.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a failure that is explained to the user rather than shown as a traceback."""


class InputImageError(PipelineError):
    """The uploaded file is not a usable photo (unreadable, damaged, too small, too large, odd shape)."""


class NoFaceError(PipelineError):
    """No usable face was found in the photo."""


class FaceTooSmallError(PipelineError):
    """A face was found but it is too small to edit well."""


class LatentCodeError(PipelineError):
    """A user-supplied W+ code has the wrong shape, dtype or values."""


class WeightsError(PipelineError):
    """A pretrained weight file is missing, corrupt, or could not be downloaded."""


class CheckpointFormatError(WeightsError):
    """A weight file was read but its contents do not match the expected architecture (keys or shapes)."""
