"""Errors that are the user's to fix.

Library code raises :class:`UserInputError` for bad input (a file that cannot be read, an arrow
outside the image, a value out of range). The CLI turns it into one clear line on stderr and exit
code 2 instead of a traceback; Python callers can catch it like any ``ValueError``.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: the message names the file, argument or value at fault."""


class MissingWeightsError(UserInputError):
    """A model component's weights are absent or do not match; the message names the component."""
