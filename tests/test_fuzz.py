"""Schemathesis fuzzes every operation of the live OpenAPI document against the app, as an
authenticated user, and checks that nothing is a 500 and every response matches the document.

`make test` runs a bounded number of examples per operation (FUZZ_EXAMPLES, default 15);
`make fuzz` runs a longer campaign.
"""

import itertools
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bookshelf import create_app
from tests.support import PASSWORD

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
_users = itertools.count()


@pytest.fixture
def fuzz_app(make_app):
    # Limits high enough that fuzzing measures the API, not the rate limiter.
    return make_app(
        GLOBAL_RATE_LIMIT="1000000 per minute",
        LOGIN_FAILURE_LIMIT="1000000 per minute",
        LOGIN_FAILURE_LIMIT_PER_EMAIL="1000000 per minute",
        LOG_LEVEL="WARNING",
    )


def _operations() -> list[tuple[str, str]]:
    """Every (path, method) of the document, read from an app built for that alone."""
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    methods = {"get", "post", "put", "patch", "delete"}
    return [
        (path, m.upper()) for path, item in document["paths"].items() for m in item if m in methods
    ]


def fresh_token(app) -> str:
    """A new user per example: a fuzzed DELETE /users/{id} or logout must not spoil the next."""
    client = app.test_client()
    email = f"fuzz{next(_users)}@example.com"
    client.post(
        "/api/v1/auth/register", json={"name": "Fuzz", "email": email, "password": PASSWORD}
    )
    response = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    return response.get_json()["data"]["access_token"]


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize(("path", "method"), _operations(), ids=lambda p: str(p))
def test_every_operation_conforms_to_the_document(fuzz_app, path, method, mode):
    """Positive cases follow the document; negative ones break it and must get a 4xx."""
    operation = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case):
        headers = {
            "Authorization": f"Bearer {fresh_token(fuzz_app)}",
            # Schemathesis' WSGI transport does not decompress; gzip has tests of its own.
            "Accept-Encoding": "identity",
        }
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()
