"""Strict input parsing on top of reqparse.

reqparse coerces (`"1999"` becomes 1999, `true` becomes 1) and ignores unknown fields, so the
type functions here accept only the JSON type they name, and `parse_body` / `parse_query`
refuse unknown, read-only and repeated fields. Every problem is collected into one 422 whose
`details` maps each field to its message.
"""

import math
import re
from datetime import UTC, datetime

from flask import request
from flask_restful import reqparse
from werkzeug.exceptions import HTTPException

from .auth import password_policy
from .errors import ValidationError
from .http import json_body

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DIGITS = re.compile(r"[0-9]+")
_ISBN_SEPARATORS = re.compile(r"[\s-]")


def next_year() -> int:
    return datetime.now(UTC).year + 1


def _text(value, min_len, max_len, strip=True) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if strip:
        value = value.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    if not min_len <= len(value) <= max_len:
        raise ValueError(f"must be {min_len} to {max_len} characters long")
    return value


def text(min_len: int, max_len: int, *, strip: bool = True):
    """A JSON string of min_len..max_len characters, trimmed unless `strip` is false."""

    def parse(value, name=None, op=None):
        return _text(value, min_len, max_len, strip)

    parse.schema = {"type": "string", "minLength": min_len, "maxLength": max_len}
    return parse


def password(value, name=None, op=None) -> str:
    """A new password (bookshelf.auth.password_policy), as sent: hashing normalises it. The rule
    that needs the account's email is the service's."""
    value = _text(value, 0, math.inf, strip=False)
    problem = password_policy.problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


password.schema = {
    "type": "string",
    "format": "password",
    "minLength": password_policy.MIN_LENGTH,
    "maxLength": password_policy.MAX_LENGTH,
    "description": "Counted in Unicode code points after NFKC normalisation. No composition "
    "rules; refused (422) when one character repeated, when among the most common passwords "
    "(ignoring case), or when it contains the part of the account's email before the @ "
    "(ignoring case, when that part has 3 characters or more).",
}


def email(value, name=None, op=None) -> str:
    value = _text(value, 3, 254).lower()
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address")
    return value


email.schema = {"type": "string", "format": "email", "maxLength": 254}


def integer(minimum: int, maximum):
    """A JSON integer (not a string, float or boolean) in minimum..maximum (maximum may be a
    callable, for bounds that move such as next year)."""

    def parse(value, name=None, op=None):
        if type(value) is not int:
            raise ValueError("must be an integer")
        return _in_range(value, minimum, maximum)

    parse.schema = _integer_schema(minimum, maximum)
    return parse


def _top(maximum) -> int:
    return maximum() if callable(maximum) else maximum


def _integer_schema(minimum: int, maximum):
    """A schema read when the document is built, since a bound may move (next year)."""
    return lambda: {"type": "integer", "minimum": minimum, "maximum": _top(maximum)}


def _in_range(value: int, minimum: int, maximum) -> int:
    top = _top(maximum)
    if not minimum <= value <= top:
        raise ValueError(f"must be between {minimum} and {top}")
    return value


def query_integer(minimum: int, maximum):
    """An integer written in a query string: digits only."""

    def parse(value, name=None, op=None):
        if not _DIGITS.fullmatch(value) or len(value) > 12:
            raise ValueError("must be an integer")
        return _in_range(int(value), minimum, maximum)

    parse.schema = _integer_schema(minimum, maximum)
    return parse


def choice(*allowed: str):
    def parse(value, name=None, op=None):
        if value not in allowed:
            raise ValueError(f"must be one of: {', '.join(allowed)}")
        return value

    parse.schema = {"type": "string", "enum": list(allowed)}
    return parse


def choices(*allowed: str):
    """A JSON array of one or more distinct strings, each one of `allowed`."""

    def parse(value, name=None, op=None):
        if not isinstance(value, list) or not value:
            raise ValueError(f"must be a non-empty array of: {', '.join(allowed)}")
        if any(item not in allowed for item in value):
            raise ValueError(f"must hold only: {', '.join(allowed)}")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat an item")
        return list(value)

    parse.schema = {
        "type": "array",
        "items": {"type": "string", "enum": list(allowed)},
        "minItems": 1,
        "maxItems": len(allowed),
        "uniqueItems": True,
    }
    return parse


def isbn(value, name=None, op=None) -> str:
    """ISBN-10 or ISBN-13 with a valid check digit; hyphens and spaces allowed, digits stored."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    digits = _ISBN_SEPARATORS.sub("", value)
    if re.fullmatch(r"[0-9]{9}[0-9X]", digits):
        total = sum((10 - i) * (10 if c == "X" else int(c)) for i, c in enumerate(digits))
        valid = total % 11 == 0
    elif re.fullmatch(r"[0-9]{13}", digits):
        total = sum((3 if i % 2 else 1) * int(c) for i, c in enumerate(digits))
        valid = total % 10 == 0
    else:
        raise ValueError("must be an ISBN-10 or ISBN-13")
    if not valid:
        raise ValueError("has an invalid check digit")
    return digits


isbn.schema = {"type": "string", "description": "ISBN-10 or ISBN-13; hyphens and spaces allowed"}


def json_parser(*arguments: reqparse.Argument) -> reqparse.RequestParser:
    """A body parser. `required` is enforced by `parse_body` (so PATCH can share the parser);
    absent fields stay absent, so a service can tell "not sent" from "sent as null"."""
    parser = reqparse.RequestParser(bundle_errors=True)
    parser.required_fields = frozenset(arg.name for arg in arguments if arg.required)
    for argument in arguments:
        argument.location = "json"
        argument.store_missing = False
        argument.required = False
        parser.args.append(argument)
    return parser


def query_parser(*arguments: reqparse.Argument) -> reqparse.RequestParser:
    parser = reqparse.RequestParser(bundle_errors=True)
    for argument in arguments:
        argument.location = "args"
        parser.args.append(argument)
    return parser


def _run(parser: reqparse.RequestParser, errors: dict) -> dict:
    try:
        values = dict(parser.parse_args())
    except HTTPException as exc:  # reqparse aborts with {field: message} when bundling errors
        messages = getattr(exc, "data", {}).get("message", {})
        for field, message in messages.items():
            errors.setdefault(field, _clean(message))
        values = {}
    if errors:
        raise ValidationError(details=errors)
    return values


def _clean(message) -> str:
    message = str(message)
    return "must not be null" if message == "Must not be null!" else message


def parse_body(parser: reqparse.RequestParser, *, partial=False, read_only=frozenset()) -> dict:
    """The fields of the JSON body, typed. `partial` (PATCH): nothing is required, but at least
    one field must be sent. Unknown and read-only fields are errors, never ignored."""
    body = json_body()
    known = {arg.name for arg in parser.args}
    errors = {}
    for field in body:
        if field in read_only:
            errors[field] = "is read-only"
        elif field not in known:
            errors[field] = "is not a known field"
    if partial and not body:
        raise ValidationError("Send at least one field to change.", {"body": "is empty"})
    if not partial:
        for field in parser.required_fields - body.keys():
            errors[field] = "is required"
    return _run(parser, errors)


def parse_query(parser: reqparse.RequestParser) -> dict:
    """The query string, typed; unknown or repeated parameters are errors."""
    known = {arg.name for arg in parser.args}
    errors = {}
    for name in request.args:
        if name not in known:
            errors[name] = "is not a known parameter"
        elif len(request.args.getlist(name)) > 1:
            errors[name] = "must be given once"
    return _run(parser, errors)
