"""Progress lines, on stderr (stdout is for the table)."""

import sys


def log(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()
