"""URL converters."""

from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1  # a 32-bit INTEGER column


def is_id(value: int) -> bool:
    """Whether a row could have this id: 1..MAX_ID. Anything else must not reach the driver,
    which overflows on it."""
    return 1 <= value <= MAX_ID


class IdConverter(IntegerConverter):
    """A positive id that fits a 32-bit INTEGER column; anything else is an unknown route (404),
    never an overflow inside the database driver."""

    def __init__(self, map):
        super().__init__(map, min=1, max=MAX_ID)
