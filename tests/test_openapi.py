"""The OpenAPI document is valid, complete and derived from the code; /docs is self-hosted."""

import re

import pytest
from openapi_spec_validator import validate

from bookshelf.config import DevelopmentConfig, ProductionConfig, from_environment
from bookshelf.resources.books import book_parser, search_parser
from bookshelf.services.books import SORT_KEYS
from tests.support import assert_error
from tests.test_books import BOOK_KEYS

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def document(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_is_documented_and_every_documented_path_is_a_route(app, document):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routes |= {(path, m.lower()) for m in rule.methods if m.lower() in METHODS}
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    assert documented == routes


def test_path_ids_are_positive_32_bit_integers(document):
    [param] = document["paths"]["/api/v1/books/{book_id}"]["parameters"]
    assert param["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


def test_query_parameters_come_from_the_parser(document):
    params = {p["name"]: p for p in document["paths"]["/api/v1/books"]["get"]["parameters"]}
    assert {a.name for a in search_parser.args} <= set(params)
    assert params["per_page"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert params["page"]["schema"]["minimum"] == 1
    for key in SORT_KEYS:
        assert key in params["sort"]["schema"]["pattern"]


def test_request_bodies_come_from_the_parser(document):
    schemas = document["components"]["schemas"]
    create = document["paths"]["/api/v1/books"]["post"]
    body = schemas[
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert set(body["properties"]) == {a.name for a in book_parser.args}
    assert body["required"] == ["author", "title"]
    assert body["additionalProperties"] is False
    assert body["properties"]["title"] == {"type": "string", "minLength": 1, "maxLength": 200}
    assert body["properties"]["published_year"]["type"] == ["integer", "null"]
    assert "owner_id" in body["description"]  # read-only fields are named
    patch = document["paths"]["/api/v1/books/{book_id}"]["patch"]
    patch_body = schemas[
        patch["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert "required" not in patch_body and patch_body["minProperties"] == 1


def test_output_schemas_come_from_the_fields_and_models(document):
    book = document["components"]["schemas"]["Book"]
    assert set(book["required"]) == BOOK_KEYS
    assert book["properties"]["isbn"]["type"] == ["string", "null"]
    assert book["properties"]["created_at"] == {"type": "string", "format": "date-time"}
    user = document["components"]["schemas"]["User"]
    assert "password" not in str(user) and "password_hash" not in user["properties"]


def test_protected_operations_declare_the_bearer_scheme(document):
    paths = document["paths"]
    assert paths["/api/v1/books"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/api/v1/books"]["get"]
    assert "401" in paths["/api/v1/books"]["post"]["responses"]
    assert "401" not in paths["/api/v1/books"]["get"]["responses"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_the_headers_that_matter_are_documented(document):
    paths = document["paths"]
    created = paths["/api/v1/books"]["post"]["responses"]["201"]["headers"]
    assert {"Location", "ETag", "X-Request-ID", "Idempotent-Replayed"} <= set(created)
    assert "Link" in paths["/api/v1/books"]["get"]["responses"]["200"]["headers"]
    assert "304" in paths["/api/v1/books/{book_id}"]["get"]["responses"]
    assert "412" in paths["/api/v1/books/{book_id}"]["patch"]["responses"]
    assert "Retry-After" in paths["/api/v1/auth/login"]["post"]["responses"]["429"]["headers"]
    header_names = {p["name"] for p in paths["/api/v1/books"]["post"]["parameters"]}
    assert "Idempotency-Key" in header_names


def test_docs_are_served_by_the_app_itself(client):
    assert client.get("/docs").status_code == 308
    page = client.get("/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/docs/") for a in assets)
    assert '"validatorUrl": null' in html  # no call to the online validator
    assert '"url": "/api/v1/openapi.json"' in html
    for asset in assets:
        with client.get(asset) as response:  # a file response: close it
            assert response.status_code == 200, asset


def test_password_rules_and_the_role_rule_are_declared(document):
    """SPEC 7, Passwords, and SPEC 3, Users: a client can read the rules it will meet."""
    schemas, paths = document["components"]["schemas"], document["paths"]
    for path, method in [("/api/v1/auth/register", "post"), ("/api/v1/users/{user_id}", "patch")]:
        operation = paths[path][method]
        name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        password = schemas[name.rsplit("/", 1)[1]]["properties"]["password"]
        assert (password["minLength"], password["maxLength"]) == (8, 128)
        assert password["format"] == "password"
        for words in ("code points", "NFKC", "common", "repeated", "before the @"):
            assert words in password["description"]
        assert "422" in operation["responses"]
    for method in ("put", "patch"):
        operation = paths["/api/v1/users/{user_id}"][method]
        assert "403" in operation["responses"]
        assert "`role`, whatever its value, gets 403" in operation["description"]


def test_login_declares_the_device_token_both_ways(document):
    """SPEC 7, no targeted lockout: the login body takes a device token, and only the login
    answers one (refresh answers the other fields)."""
    schemas, paths = document["components"]["schemas"], document["paths"]

    def resolve(schema):
        return schemas[schema["$ref"].rsplit("/", 1)[1]]

    def answer(operation):
        envelope = resolve(operation["responses"]["200"]["content"]["application/json"]["schema"])
        return resolve(envelope["properties"]["data"])

    login = paths["/api/v1/auth/login"]["post"]
    body = resolve(login["requestBody"]["content"]["application/json"]["schema"])
    assert body["properties"]["device_token"]["type"] == "string"
    assert "device_token" not in body["required"]
    assert {"device_token", "user", "refresh_token"} <= set(answer(login)["required"])
    assert "device_token" not in answer(paths["/api/v1/auth/refresh"]["post"])["properties"]


def test_swagger_ui_keeps_no_token_in_the_browser(client):
    html = client.get("/docs/").get_data(as_text=True)
    assert '"persistAuthorization": false' in html


DOCS_URLS = ["/docs", "/docs/", "/docs/swagger-ui-bundle.js", "/api/v1/openapi.json"]


@pytest.mark.parametrize("url", DOCS_URLS)
def test_docs_can_be_switched_off(make_app, url):
    client = make_app(DOCS_ENABLED=False).test_client()
    assert_error(client.get(url), 404, "NOT_FOUND")
    assert_error(client.post(url, json={}), 404, "NOT_FOUND")  # not even a 405 says it exists
    assert client.get("/api/v1/books").status_code == 200


def test_docs_are_off_by_default_in_production(make_app):
    secret = "s" * 40
    app = make_app(
        APP_ENV="production", SECRET_KEY=secret, JWT_SECRET_KEY=secret, ALLOWED_HOSTS=["localhost"]
    )
    client = app.test_client()
    for url in DOCS_URLS:
        assert_error(client.get(url), 404, "NOT_FOUND")


def test_docs_are_on_by_default_in_development_and_switchable_from_the_environment():
    assert DevelopmentConfig.DOCS_ENABLED and not ProductionConfig.DOCS_ENABLED
    assert from_environment({"DOCS_ENABLED": "true"}) == {"DOCS_ENABLED": True}
    assert from_environment({"DOCS_ENABLED": "0"}) == {"DOCS_ENABLED": False}
