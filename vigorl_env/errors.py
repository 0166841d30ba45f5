"""Errors raised for bad data (never for bad model text: the env scores that instead)."""

from __future__ import annotations


class DataNotFoundError(FileNotFoundError):
    """A benchmark file or image is missing; the message says where it was expected and how to get it."""


class DataFormatError(ValueError):
    """A dataset record is malformed; the message names the file, the line and the field."""
