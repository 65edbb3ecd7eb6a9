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


# Limits that user input is checked against (the messages name them).
# Speed in pixels per frame: faster motion leaves the picture within one frame, and float32 sample
# positions lose whole pixels past ~1e7 px, so larger values only ever give broken (black) frames.
MAX_SPEED = 1e4
# Speed factors (--strength, an arrow's strength): far above any useful value, far below overflow.
MAX_STRENGTH = 1e4
# Pixels the warp engine and `stillmotion motion` work on at once (about 4.5 GB for `animate`,
# 6 GB for `motion`, measured at 12 MP and scaled); larger photos need --size.
MAX_WORK_PIXELS = 40_000_000
