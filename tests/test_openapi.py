"""The OpenAPI document is valid, complete and derived from the code; /docs is self-hosted."""

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bookshelf.config import DevelopmentConfig, ProductionConfig, from_environment
from bookshelf.models.user import ROLES
from bookshelf.openapi import error_codes
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
        if method in METHODS and path.startswith("/api/v1/")
    }
    assert documented == routes
    assert {"/health", "/health/ready"} <= set(document["paths"])  # the probes' blueprint


def test_path_ids_are_positive_32_bit_integers(document):
    [param] = document["paths"]["/api/v1/books/{book_id}"]["parameters"]
    assert param["schema"] == {
        "type": "integer",
        "format": "int32",
        "minimum": 1,
        "maximum": 2**31 - 1,
    }


def test_query_parameters_come_from_the_parser(document):
    params = {p["name"]: p for p in document["paths"]["/api/v1/books"]["get"]["parameters"]}
    assert {a.name for a in search_parser.args} <= set(params)
    assert params["per_page"]["schema"] == {
        "type": "integer",
        "format": "int32",
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
    assert book["properties"]["created_at"]["format"] == "date-time"
    user = document["components"]["schemas"]["User"]
    assert "password" not in str(user) and "password_hash" not in user["properties"]


def test_protected_operations_declare_the_bearer_scheme(document):
    paths = document["paths"]
    assert paths["/api/v1/books"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/v1/books"]["get"]["security"] == []  # public: no auth, whatever the default
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


# What a generated client needs to compile with no casts (issue 17, point 1), and one rule for
# time and links (point 5).


def schema_of(document, ref_or_schema):
    ref = ref_or_schema.get("$ref")
    if ref is None:
        return ref_or_schema
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def success_data(document, path, method, status="200"):
    response = document["paths"][path][method]["responses"][status]
    envelope = schema_of(document, response["content"]["application/json"]["schema"])
    return schema_of(document, envelope["properties"]["data"])


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def walk(node, where=()):
    """Every schema-like dict in `node`, with where it is."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, (*where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*where, index))


def test_error_details_map_field_names_to_strings(document):
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["properties"]["details"]["type"] == "object"
    assert error["properties"]["details"]["additionalProperties"]["type"] == "string"


def test_refresh_takes_no_body_and_logout_an_optional_one(document):
    paths = document["paths"]
    assert "requestBody" not in paths["/api/v1/auth/refresh"]["post"]
    logout = paths["/api/v1/auth/logout"]["post"]["requestBody"]
    assert logout["required"] is False
    patch = paths["/api/v1/books/{book_id}"]["patch"]["requestBody"]
    assert patch["required"] is True  # an empty PATCH is 422


def test_login_and_refresh_answer_distinct_schemas(document):
    login = success_data(document, "/api/v1/auth/login", "post")
    refresh = success_data(document, "/api/v1/auth/refresh", "post")
    assert login is not refresh
    assert {"user", "device_token"} <= set(login["required"])
    assert "user" not in refresh["properties"]
    assert refresh["additionalProperties"] is False


def test_role_and_error_codes_are_enums(document, client):
    user = document["components"]["schemas"]["User"]
    assert user["properties"]["role"]["enum"] == list(ROLES)
    code = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert code["enum"] == error_codes()
    spec_table = {
        "BAD_REQUEST", "UNAUTHORIZED", "INVALID_CREDENTIALS", "TOKEN_EXPIRED", "TOKEN_REVOKED",
        "TOKEN_INVALID", "FORBIDDEN", "NOT_FOUND", "METHOD_NOT_ALLOWED", "CONFLICT",
        "PRECONDITION_FAILED", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "VALIDATION_ERROR",
        "RATE_LIMITED", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE",
    }  # fmt: skip
    assert spec_table <= set(code["enum"])
    assert client.delete("/api/v1/books").get_json()["error"]["code"] in code["enum"]


def test_every_integer_has_a_format_and_ids_are_int32(document):
    integers = [
        (where, schema)
        for where, schema in walk(document)
        if schema.get("type") == "integer" or "integer" in (schema.get("type") or [])
    ]
    assert integers
    formats = {"int32", "int64"}
    missing = [where for where, schema in integers if schema.get("format") not in formats]
    assert missing == []
    unbounded = [where for where, schema in integers if "maximum" not in schema]
    assert unbounded == []
    arrays = [schema for _, schema in walk(document) if schema.get("type") == "array"]
    # Pages hold at most 100 items; a closed set of distinct values (scopes) at most all of it.
    assert arrays and all(
        schema["maxItems"] == 100
        or (schema.get("uniqueItems") and schema["maxItems"] == len(schema["items"]["enum"]))
        for schema in arrays
    )
    for name in ("Book", "User"):
        id_schema = document["components"]["schemas"][name]["properties"]["id"]
        assert (id_schema["format"], id_schema["minimum"], id_schema["maximum"]) == (
            "int32",
            1,
            2**31 - 1,
        )


# Strings with no maximum length, and why: an ISBN is accepted with any number of hyphens and
# spaces (the digits are what is checked).
UNBOUNDED_STRINGS = {"isbn"}


def test_every_string_has_a_maximum_length(document):
    unbounded = [
        where
        for where, schema in walk(document)
        if (schema.get("type") == "string" or "string" in (schema.get("type") or []))
        and not {"maxLength", "enum", "const"} & set(schema)
        and where[-1] not in UNBOUNDED_STRINGS
    ]
    assert unbounded == []
    schemas = document["components"]["schemas"]
    assert schemas["Book"]["properties"]["title"]["maxLength"] == 200  # the column's
    assert schemas["User"]["properties"]["email"]["maxLength"] == 254


# Headers every HTTP API sends, not this API's own: not declared per operation.
GENERIC_HEADERS = {
    "content-type",
    "date",
    "content-length",
    "content-encoding",
    "cache-control",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "strict-transport-security",
}


def declared_headers(document, path, method, status):
    response = document["paths"][path][method]["responses"][str(status)]
    return {name.lower() for name in response.get("headers", {})}


def test_every_response_header_the_api_sends_is_declared(make_app, document):
    from tests.support import PASSWORD, bearer

    client = make_app(GLOBAL_RATE_LIMIT="60 per minute").test_client()
    exchanges = []

    def call(method, url, path, status, **kwargs):
        response = client.open(url, method=method, **kwargs)
        assert response.status_code == status, response.get_json()
        exchanges.append((path, method.lower(), response))
        return response

    register = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    call("POST", "/api/v1/auth/register", "/api/v1/auth/register", 201, json=register)
    login = {"email": "ann@example.com", "password": PASSWORD}
    tokens = call("POST", "/api/v1/auth/login", "/api/v1/auth/login", 200, json=login)
    auth = bearer(tokens.get_json()["data"]["access_token"])
    book = {"title": "Dune", "author": "Frank Herbert"}
    idempotent = auth | {"Idempotency-Key": "k1"}
    created = call("POST", "/api/v1/books", "/api/v1/books", 201, json=book, headers=idempotent)
    call("POST", "/api/v1/books", "/api/v1/books", 201, json=book, headers=idempotent)
    item = "/api/v1/books/{book_id}"
    url = created.headers["Location"]
    etag = call("GET", url, item, 200).headers["ETag"]
    call("GET", url, item, 304, headers={"If-None-Match": etag})
    call("PATCH", url, item, 412, json={"genre": "SF"}, headers=auth | {"If-Match": '"stale"'})
    for _ in range(25):
        client.post("/api/v1/books", json=book, headers=auth)
    call("GET", "/api/v1/books?per_page=5&page=2", "/api/v1/books", 200)
    call("GET", "/api/v1/auth/me", "/api/v1/auth/me", 401)
    call("GET", "/health", "/health", 200)
    call("GET", "/health/ready", "/health/ready", 200)
    while (limited := client.get("/api/v1/books")).status_code != 429:
        pass
    exchanges.append(("/api/v1/books", "get", limited))
    assert "Retry-After" in limited.headers
    for path, method, response in exchanges:
        sent = {name.lower() for name, _ in response.headers} - GENERIC_HEADERS
        declared = declared_headers(document, path, method, response.status_code)
        assert sent <= declared, (path, method, response.status_code, sent - declared)
    seen = {name.lower() for *_, r in exchanges for name, _ in r.headers}
    assert {"x-ratelimit-limit", "link", "location", "etag", "idempotent-replayed"} <= seen


def test_response_headers_are_components(document):
    headers = document["components"]["headers"]
    expected = {"X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    expected |= {"ETag", "Link", "Location", "Retry-After", "Idempotent-Replayed", "Vary"}
    expected |= {"WWW-Authenticate", "Access-Control-Allow-Origin"}
    assert expected <= set(headers)
    for _, _, operation in operations(document):
        for response in operation["responses"].values():
            assert all("$ref" in h for h in response.get("headers", {}).values())
            assert "X-Request-ID" in response["headers"]


def test_public_operations_say_so_and_others_name_the_bearer_scheme(document):
    for path, method, operation in operations(document):
        assert "security" in operation, (path, method)
        protected = operation["security"] == [{"bearerAuth": []}]
        assert protected or operation["security"] == [], (path, method)
        assert not protected or "401" in operation["responses"], (path, method)
    assert document["paths"]["/api/v1/auth/login"]["post"]["security"] == []


def test_tags_are_declared_with_descriptions(document):
    tags = {tag["name"]: tag for tag in document["tags"]}
    assert all(tag["description"] for tag in tags.values())
    for path, method, operation in operations(document):
        assert operation["tags"] and set(operation["tags"]) <= set(tags), (path, method)


def test_the_health_endpoints_are_documented_and_answer_as_documented(document, client):
    schemas = Draft202012Validator
    for path, schema_name in [("/health", "Health"), ("/health/ready", "Readiness")]:
        operation = document["paths"][path]["get"]
        assert operation["security"] == [] and operation["tags"] == ["health"]
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{schema_name}"}
        schemas(document["components"]["schemas"][schema_name]).validate(client.get(path).json)
    assert "503" in document["paths"]["/health/ready"]["get"]["responses"]
    assert "503" not in document["paths"]["/health"]["get"]["responses"]


def _validator(document, schema):
    resource = Resource.from_contents(document, DRAFT202012)
    registry = Registry().with_resource("urn:document", resource)
    rebased = {"$ref": "urn:document#" + schema["$ref"][1:]} if "$ref" in schema else schema
    return Draft202012Validator(rebased, registry=registry)


def test_every_operation_has_examples_that_match_their_schemas(document):
    for path, method, operation in operations(document):
        media = []
        if "requestBody" in operation:
            media.append(operation["requestBody"]["content"]["application/json"])
        for response in operation["responses"].values():
            media += response.get("content", {}).values()
        examples = [m for m in media if "example" in m]
        assert examples, (path, method)
        for m in examples:
            _validator(document, m["schema"]).validate(m["example"])


def test_info_version_is_the_package_version(document):
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert document["info"]["version"] == version


MILLISECONDS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_one_rule_for_time_and_links(client, auth, document):
    """Timestamps with milliseconds and Z, as the document says; Location absolute like Link."""
    _, headers = auth.user()
    created = client.post(
        "/api/v1/books", json={"title": "Dune", "author": "Frank Herbert"}, headers=headers
    )
    book = created.get_json()["data"]
    assert MILLISECONDS_Z.fullmatch(book["created_at"]), book["created_at"]
    assert MILLISECONDS_Z.fullmatch(book["updated_at"])
    pattern = document["components"]["schemas"]["Book"]["properties"]["created_at"]["pattern"]
    assert re.fullmatch(pattern, book["created_at"])
    location = urlsplit(created.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == (
        "http",
        "localhost",
        f"/api/v1/books/{book['id']}",
    )
    client.post("/api/v1/books", json={"title": "Emma", "author": "Jane Austen"}, headers=headers)
    link = client.get("/api/v1/books?per_page=1").headers["Link"]
    assert link.startswith("<http://localhost/api/v1/books?")
