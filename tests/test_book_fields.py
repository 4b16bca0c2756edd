"""Sparse fieldsets (SPEC.md section 9): `fields=` on book reads and lists, an ETag per
representation, cursors that ignore it, writes that answer the whole book."""

from urllib.parse import parse_qs, urlsplit

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.support import assert_error
from tests.test_books import BOOK_KEYS

BOOKS = "/api/v1/books"
INVALID_FIELDS = [
    pytest.param("", id="empty"),
    pytest.param(",", id="only a comma"),
    pytest.param("title,", id="trailing comma"),
    pytest.param("title,,author", id="empty name"),
    pytest.param("nope", id="unknown"),
    pytest.param("title,nope", id="one unknown"),
    pytest.param("Title", id="case"),
    pytest.param(" title", id="space"),
    pytest.param("deleted_at", id="a column that is not output"),
    pytest.param("title,title", id="duplicate"),
    pytest.param("id,id", id="duplicate id"),
    pytest.param("-title", id="a sort key"),
]


# --- helpers ---------------------------------------------------------------------------------


def post(client, headers, **fields):
    body = {"title": "Dune", "author": "Frank Herbert"} | fields
    response = client.post(BOOKS, json=body, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["data"]


def ok(response, status=200):
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["data"]


def assert_fields_refused(response, message=None):
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert set(details) == {"fields"}, details
    if message is not None:
        assert message in details["fields"], details
    return details["fields"]


@pytest.fixture
def owner(auth):
    return auth.user()


@pytest.fixture
def book(client, owner):
    return post(client, owner[1], genre="SF", published_year=1965, isbn="9780306406157")


@pytest.fixture
def shelf(client, owner):
    return [post(client, owner[1], title=f"t{n:02}", author=f"a{n % 3}") for n in range(7)]


def list_urls(owner):
    """The lists that take `fields`: the catalog and one user's books."""
    return [BOOKS, f"/api/v1/users/{owner[0]['id']}/books"]


# --- one book --------------------------------------------------------------------------------


def test_fields_picks_the_fields_and_id_always(client, book):
    data = ok(client.get(f"{BOOKS}/{book['id']}?fields=title,author"))
    assert data == {"id": book["id"], "title": "Dune", "author": "Frank Herbert"}
    assert ok(client.get(f"{BOOKS}/{book['id']}?fields=genre")) == {"id": book["id"], "genre": "SF"}
    assert ok(client.get(f"{BOOKS}/{book['id']}?fields=id")) == {"id": book["id"]}


def test_nulls_and_timestamps_are_as_in_the_whole_book(client, owner):
    bare = post(client, owner[1])
    data = ok(client.get(f"{BOOKS}/{bare['id']}?fields=published_year,isbn,created_at"))
    assert data == {
        "id": bare["id"],
        "published_year": None,
        "isbn": None,
        "created_at": bare["created_at"],
    }


def test_every_field_is_the_whole_book(client, book):
    whole = client.get(f"{BOOKS}/{book['id']}")
    every = client.get(f"{BOOKS}/{book['id']}?fields={','.join(sorted(BOOK_KEYS))}")
    assert ok(every) == ok(whole) == book
    assert set(ok(whole)) == BOOK_KEYS
    assert every.headers["ETag"] == whole.headers["ETag"]


def test_the_order_of_the_names_does_not_matter(client, book):
    one = client.get(f"{BOOKS}/{book['id']}?fields=title,author")
    other = client.get(f"{BOOKS}/{book['id']}?fields=author,id,title")
    assert list(ok(one)) == list(ok(other)) == ["id", "title", "author"]  # the book's order
    assert one.headers["ETag"] == other.headers["ETag"]


@pytest.mark.parametrize("value", INVALID_FIELDS)
def test_invalid_fields_are_422_naming_fields(client, book, value):
    assert_fields_refused(client.get(f"{BOOKS}/{book['id']}?fields={value}"))


def test_the_422_messages_say_what_is_wrong(client, book):
    url = f"{BOOKS}/{book['id']}"
    assert_fields_refused(client.get(f"{url}?fields=nope"), "one of id, title, author")
    assert_fields_refused(client.get(f"{url}?fields=title,title"), "title is given twice")
    assert_fields_refused(client.get(f"{url}?fields="), "separated by commas")
    refused = client.get(f"{url}?fields=title&fields=author")
    assert_fields_refused(refused, "must be given once")


def test_a_book_read_takes_no_other_parameter(client, book):
    details = assert_error(client.get(f"{BOOKS}/{book['id']}?sort=title"), 422, "VALIDATION_ERROR")
    assert details["details"] == {"sort": "is not a known parameter"}


def test_a_missing_book_is_404_with_or_without_fields(client, book):
    assert_error(client.get(f"{BOOKS}/{book['id'] + 1}?fields=title"), 404, "NOT_FOUND")
    assert_fields_refused(client.get(f"{BOOKS}/{book['id'] + 1}?fields=nope"))  # 422 first


# --- ETags per representation ----------------------------------------------------------------


def test_each_representation_has_its_own_etag(client, book):
    url = f"{BOOKS}/{book['id']}"
    tags = {
        client.get(url).headers["ETag"],
        client.get(f"{url}?fields=title").headers["ETag"],
        client.get(f"{url}?fields=author").headers["ETag"],
        client.get(f"{url}?fields=title,author").headers["ETag"],
    }
    assert len(tags) == 4
    assert all(tag.startswith('"') for tag in tags)  # strong, as the whole book's


def test_if_none_match_answers_304_only_to_the_same_representation(client, book):
    url = f"{BOOKS}/{book['id']}"
    whole = client.get(url).headers["ETag"]
    sparse = client.get(f"{url}?fields=title").headers["ETag"]
    not_modified = client.get(f"{url}?fields=title", headers={"If-None-Match": sparse})
    assert not_modified.status_code == 304 and not_modified.get_data() == b""
    assert not_modified.headers["ETag"] == sparse
    assert ok(client.get(f"{url}?fields=title", headers={"If-None-Match": whole})) == {
        "id": book["id"],
        "title": "Dune",
    }
    assert ok(client.get(url, headers={"If-None-Match": sparse})) == book
    assert client.get(f"{url}?fields=author", headers={"If-None-Match": sparse}).status_code == 200
    both = client.get(f"{url}?fields=title", headers={"If-None-Match": f"{whole}, {sparse}"})
    assert both.status_code == 304


def test_a_sparse_etag_changes_only_with_its_fields(client, owner, book):
    url = f"{BOOKS}/{book['id']}"
    title_tag = client.get(f"{url}?fields=title").headers["ETag"]
    genre_tag = client.get(f"{url}?fields=genre").headers["ETag"]
    assert ok(client.patch(url, json={"genre": "Fantasy"}, headers=owner[1]))["genre"] == "Fantasy"
    # updated_at changed too, but neither representation shows it
    assert (
        client.get(f"{url}?fields=title", headers={"If-None-Match": title_tag}).status_code == 304
    )
    assert (
        client.get(f"{url}?fields=genre", headers={"If-None-Match": genre_tag}).status_code == 200
    )


def test_if_match_on_a_write_needs_the_whole_books_etag(client, owner, book):
    url = f"{BOOKS}/{book['id']}"
    sparse = client.get(f"{url}?fields=title").headers["ETag"]
    stale = client.patch(url, json={"genre": "X"}, headers=owner[1] | {"If-Match": sparse})
    assert_error(stale, 412, "PRECONDITION_FAILED")
    assert ok(client.get(url))["genre"] == "SF"  # nothing changed
    whole = client.get(url).headers["ETag"]
    assert (
        client.patch(url, json={"genre": "X"}, headers=owner[1] | {"If-Match": whole}).status_code
        == 200
    )


def test_writes_answer_the_whole_book(client, owner, book):
    """A write's answer and its ETag are the whole book's, whatever the query says: a write
    does not read `fields`, and the ETag it gives is the one If-Match needs next."""
    url = f"{BOOKS}/{book['id']}"
    patched = client.patch(f"{url}?fields=title", json={"genre": "X"}, headers=owner[1])
    assert set(ok(patched)) == BOOK_KEYS
    assert patched.headers["ETag"] == client.get(url).headers["ETag"]
    put = client.put(f"{url}?fields=title", json={"title": "T", "author": "A"}, headers=owner[1])
    assert set(ok(put)) == BOOK_KEYS
    created = client.post(
        f"{BOOKS}?fields=title", json={"title": "T", "author": "A"}, headers=owner[1]
    )
    assert set(ok(created, 201)) == BOOK_KEYS


# --- lists -----------------------------------------------------------------------------------


def test_lists_send_the_fields_asked_for(client, owner, shelf):
    for url in list_urls(owner):
        data = ok(client.get(f"{url}?fields=title&per_page=3"))
        assert data == [{"id": b["id"], "title": b["title"]} for b in shelf[:3]], url
        whole = ok(client.get(f"{url}?per_page=3"))
        assert whole == shelf[:3]


@pytest.mark.parametrize("value", INVALID_FIELDS)
def test_lists_refuse_invalid_fields(client, owner, value):
    for url in list_urls(owner):
        assert_fields_refused(client.get(f"{url}?fields={value}"))


def test_a_lists_etag_is_per_representation(client, owner, shelf):
    for url in list_urls(owner):
        whole = client.get(url)
        sparse = client.get(f"{url}?fields=title")
        assert whole.headers["ETag"] != sparse.headers["ETag"]
        assert sparse.headers["ETag"].startswith('W/"')
        again = client.get(f"{url}?fields=title", headers={"If-None-Match": sparse.headers["ETag"]})
        assert again.status_code == 304
        other = client.get(f"{url}?fields=title", headers={"If-None-Match": whole.headers["ETag"]})
        assert other.status_code == 200


def test_links_keep_the_fields(client, owner, shelf):
    response = client.get(f"{BOOKS}?fields=title&per_page=2")
    for part in response.headers["Link"].split(","):
        assert parse_qs(urlsplit(part.split(";")[0].strip("<> ")).query)["fields"] == ["title"]


def test_a_cursor_works_whatever_the_fields(client, owner, shelf):
    """`fields` says how each book looks, not which books: a cursor made with some fields
    follows on with others, or none."""
    whole = ok(client.get(f"{BOOKS}?sort=-title&per_page=100"))
    first = client.get(f"{BOOKS}?sort=-title&per_page=3&fields=title").get_json()
    cursor = first["meta"]["next_cursor"]
    assert cursor
    following = ok(client.get(f"{BOOKS}?sort=-title&per_page=3&cursor={cursor}"))
    assert following == whole[3:6]
    sparse = ok(client.get(f"{BOOKS}?sort=-title&per_page=3&fields=author&cursor={cursor}"))
    assert sparse == [{"id": b["id"], "author": b["author"]} for b in whole[3:6]]
    plain_cursor = client.get(f"{BOOKS}?sort=-title&per_page=3").get_json()["meta"]["next_cursor"]
    assert plain_cursor == cursor


def test_a_cursor_walk_with_fields_sees_every_book(client, owner, shelf):
    url, seen = f"{BOOKS}?fields=title&per_page=2&sort=title", []
    for _ in range(10):
        response = client.get(url)
        seen += ok(response)
        meta = response.get_json()["meta"]
        if meta["next_cursor"] is None:
            break
        url = f"{BOOKS}?fields=title&per_page=2&sort=title&cursor={meta['next_cursor']}"
    assert seen == [{"id": b["id"], "title": b["title"]} for b in shelf]


# --- the document ----------------------------------------------------------------------------


@pytest.fixture
def document(client):
    return client.get("/api/v1/openapi.json").get_json()


def validator(document, name):
    resource = Resource.from_contents(document, DRAFT202012)
    registry = Registry().with_resource("urn:document", resource)
    return Draft202012Validator(
        {"$ref": f"urn:document#/components/schemas/{name}"}, registry=registry
    )


READS = [
    ("/api/v1/books", "BookReadPage"),
    ("/api/v1/books/{book_id}", "BookReadItem"),
    ("/api/v1/users/{user_id}/books", "BookReadPage"),
]


@pytest.mark.parametrize(("path", "envelope"), READS)
def test_the_document_declares_fields_on_each_read(document, path, envelope):
    operation = document["paths"][path]["get"]
    [fields] = [p for p in operation["parameters"] if p["name"] == "fields"]
    assert fields["in"] == "query" and fields["required"] is False
    schema = fields["schema"]
    assert schema["type"] == "string" and schema["maxLength"] == len(",".join(sorted(BOOK_KEYS)))
    for name in BOOK_KEYS:
        assert name in schema["pattern"] and name in schema["description"]
    assert "`id` is always sent" in schema["description"]
    ok_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok_schema == {"$ref": f"#/components/schemas/{envelope}"}
    assert "422" in operation["responses"] and "304" in operation["responses"]


def test_the_fields_pattern_is_the_parsers_rule_but_for_duplicates(document, client, book):
    import re

    [fields] = [
        p for p in document["paths"]["/api/v1/books"]["get"]["parameters"] if p["name"] == "fields"
    ]
    pattern = re.compile(fields["schema"]["pattern"])
    for value in ("title", "id,title,author", ",".join(sorted(BOOK_KEYS))):
        assert pattern.fullmatch(value)
        assert client.get(f"{BOOKS}/{book['id']}?fields={value}").status_code == 200
    for param in INVALID_FIELDS:
        value = param.values[0]
        if pattern.fullmatch(value):  # only a name given twice passes the pattern
            assert value in ("title,title", "id,id")


def test_the_document_validates_sparse_and_whole_answers(document, client, owner, book, shelf):
    item = validator(document, "BookReadItem")
    page = validator(document, "BookReadPage")
    url = f"{BOOKS}/{book['id']}"
    for query in ("", "?fields=title", "?fields=id", "?fields=isbn,published_year,updated_at"):
        item.validate(client.get(url + query).get_json())
        page.validate(client.get(BOOKS + query).get_json())
        page.validate(client.get(f"/api/v1/users/{owner[0]['id']}/books{query}").get_json())
    # A sparse book is not a Book, and a Book with a field too many is neither.
    sparse = client.get(f"{url}?fields=title").get_json()["data"]
    assert not validator(document, "Book").is_valid(sparse)
    assert validator(document, "BookRead").is_valid(sparse)
    assert not validator(document, "BookRead").is_valid(book | {"deleted_at": None})
    assert not validator(document, "BookRead").is_valid({"title": "no id"})


def test_the_document_keeps_writes_whole(document):
    schemas = document["components"]["schemas"]
    assert set(schemas["Book"]["required"]) == BOOK_KEYS
    assert schemas["BookFields"]["required"] == ["id"]
    assert schemas["BookFields"]["properties"] == schemas["Book"]["properties"]
    assert schemas["BookRead"]["anyOf"] == [
        {"$ref": "#/components/schemas/Book"},
        {"$ref": "#/components/schemas/BookFields"},
    ]
    for path, method in [
        ("/api/v1/books", "post"),
        ("/api/v1/books/{book_id}", "put"),
        ("/api/v1/books/{book_id}", "patch"),
    ]:
        operation = document["paths"][path][method]
        success = next(r for s, r in operation["responses"].items() if s in ("200", "201"))
        assert success["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/BookItem"
        }
        assert "fields" not in {p["name"] for p in operation["parameters"]}
