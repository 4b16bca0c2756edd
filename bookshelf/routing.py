"""URL converters."""

from werkzeug.routing import IntegerConverter


class IdConverter(IntegerConverter):
    """A positive id that fits a 32-bit INTEGER column; anything else is an unknown route (404),
    never an overflow inside the database driver."""

    def __init__(self, map):
        super().__init__(map, min=1, max=2**31 - 1)
