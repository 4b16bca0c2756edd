"""Whose books (SPEC.md section 9): `GET /books?owner_id=` and `GET /users/{id}/books`, the same
public list, the second a user's sub-resource (404 when there is no such live user)."""

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support import assert_error

BOOKS = "/api/v1/books"


def user_books(user_id):
    return f"/api/v1/users/{user_id}/books"


def post(client, headers, **fields):
    body = {"title": "Dune", "author": "Frank Herbert"} | fields
    response = client.post(BOOKS, json=body, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["data"]


def listing(client, url, headers=None):
    """(data, meta, response) of a list that must answer 200."""
    response = client.get(url, headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    return body["data"], body["meta"], response


def ids(books):
    return [book["id"] for book in books]


@pytest.fixture
def people(client, auth):
    """Ann (4 books), Bob (3 books), Cy (none), their books interleaved by id."""
    ann, bob, cy = auth.user(), auth.user(), auth.user()
    for n, (who, author, genre, year) in enumerate(
        [
            (ann, "Le Guin", "SF", 1969),
            (bob, "Le Guin", "SF", 1971),
            (ann, "Herbert", "SF", 1965),
            (bob, "Austen", "Novel", 1813),
            (ann, "Le Guin", "Fantasy", 1968),
            (ann, "Austen", "Novel", 1811),
            (bob, "Herbert", "SF", 1969),
        ]
    ):
        post(client, who[1], title=f"Book {n}", author=author, genre=genre, published_year=year)
    return ann, bob, cy


def owned_by(client, user):
    everything, _, _ = listing(client, f"{BOOKS}?per_page=100")
    return [b for b in everything if b["owner_id"] == user[0]["id"]]


# --- GET /books?owner_id= --------------------------------------------------------------------


def test_owner_id_lists_that_users_books_only(client, people):
    ann, bob, cy = people
    for user, count in ((ann, 4), (bob, 3)):
        data, meta, _ = listing(client, f"{BOOKS}?owner_id={user[0]['id']}")
        assert {b["owner_id"] for b in data} == {user[0]["id"]}
        assert data == owned_by(client, user)
        assert (meta["total"], meta["total_exact"], len(data)) == (count, True, count)


def test_owner_id_is_public(client, people):
    ann, bob, _ = people
    anonymous = listing(client, f"{BOOKS}?owner_id={ann[0]['id']}")[0]
    as_bob = listing(client, f"{BOOKS}?owner_id={ann[0]['id']}", headers=bob[1])[0]
    assert anonymous == as_bob and len(anonymous) == 4


def test_owner_id_of_no_one_is_an_empty_list(client, people):
    """A filter matching nothing, as `author=nobody` is; only the sub-resource says 404."""
    _, _, cy = people
    for owner_id in (cy[0]["id"], 999, 2**31 - 1):
        data, meta, _ = listing(client, f"{BOOKS}?owner_id={owner_id}")
        assert (data, meta["total"], meta["pages"], meta["next_cursor"]) == ([], 0, 0, None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "between 1 and 2147483647"),
        ("2147483648", "between 1 and 2147483647"),
        ("99999999999", "between 1 and 2147483647"),
        ("-1", "must be an integer"),
        ("abc", "must be an integer"),
        ("", "must be an integer"),
        ("1.0", "must be an integer"),
        ("+1", "must be an integer"),
        (" 1", "must be an integer"),
        ("1" * 13, "must be an integer"),
    ],
)
def test_owner_id_must_be_an_id(client, value, message):
    details = assert_error(client.get(f"{BOOKS}?owner_id={value}"), 422, "VALIDATION_ERROR")
    assert set(details["details"]) == {"owner_id"}
    assert message in details["details"]["owner_id"]


def test_owner_id_given_twice_is_422(client, people):
    ann, bob, _ = people
    response = client.get(f"{BOOKS}?owner_id={ann[0]['id']}&owner_id={bob[0]['id']}")
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert details == {"owner_id": "must be given once"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("author=le%20guin", ["Book 0", "Book 4"]),
        ("genre=sf", ["Book 0", "Book 2"]),
        ("q=book%205", ["Book 5"]),
        ("year_from=1900&year_to=1968", ["Book 2", "Book 4"]),
        ("sort=-published_year", ["Book 0", "Book 4", "Book 2", "Book 5"]),
        ("sort=author,-title", ["Book 5", "Book 2", "Book 4", "Book 0"]),
        ("author=austen&genre=novel&year_to=1811", ["Book 5"]),
        ("author=austen&genre=sf", []),
    ],
)
def test_owner_id_combines_with_every_other_parameter(client, people, query, expected):
    ann = people[0]
    for url in (f"{BOOKS}?owner_id={ann[0]['id']}&{query}", f"{user_books(ann[0]['id'])}?{query}"):
        data, meta, _ = listing(client, url)
        assert [b["title"] for b in data] == expected, url
        assert meta["total"] == len(expected)


def test_pages_by_number_within_an_owner(client, people):
    ann = people[0]
    data, meta, response = listing(client, f"{BOOKS}?owner_id={ann[0]['id']}&per_page=3&page=2")
    assert [b["title"] for b in data] == ["Book 5"]
    assert (meta["page"], meta["total"], meta["pages"]) == (2, 4, 2)
    for part in response.headers["Link"].split(","):
        query = parse_qs(urlsplit(part.split(";")[0].strip("<> ")).query)
        assert query["owner_id"] == [str(ann[0]["id"])]


# --- GET /users/{id}/books -------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["", "per_page=2", "per_page=2&page=2", "sort=-title&fields=title", "count=false", "q=book"],
)
def test_a_users_books_are_the_owner_filter(client, people, query):
    ann = people[0]
    nested = client.get(f"{user_books(ann[0]['id'])}?{query}")
    filtered = client.get(f"{BOOKS}?owner_id={ann[0]['id']}&{query}")
    assert nested.status_code == filtered.status_code == 200
    assert nested.get_json()["data"] == filtered.get_json()["data"]
    strip = {"request_id"}
    nested_meta = {k: v for k, v in nested.get_json()["meta"].items() if k not in strip}
    filtered_meta = {k: v for k, v in filtered.get_json()["meta"].items() if k not in strip}
    assert nested_meta == filtered_meta
    assert nested.headers["ETag"] == filtered.headers["ETag"]  # the same representation


def test_a_users_books_are_public(client, people):
    ann, bob, cy = people
    data, meta, response = listing(client, user_books(ann[0]["id"]))
    assert len(data) == 4 and meta["total"] == 4
    assert listing(client, user_books(ann[0]["id"]), headers=bob[1])[0] == data
    assert listing(client, user_books(cy[0]["id"]))[0] == []  # a user without books: empty
    assert response.headers["ETag"]


def test_the_books_of_no_such_user_are_404(client, people):
    for user_id in (999, 2**31 - 1):
        assert_error(client.get(user_books(user_id)), 404, "NOT_FOUND")
    assert_error(client.get(f"{user_books(999)}?fields=nope"), 404, "NOT_FOUND")  # 404 first


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/users/0/books",
        "/api/v1/users/abc/books",
        "/api/v1/users/2147483648/books",
        "/api/v1/users/-1/books",
    ],
)
def test_a_path_that_is_not_an_id_is_an_unknown_route(client, path):
    assert_error(client.get(path), 404, "NOT_FOUND")


def test_a_deleted_users_books_are_404_there_but_still_in_the_catalog(client, people):
    ann = people[0]
    before = listing(client, f"{BOOKS}?owner_id={ann[0]['id']}")[0]
    assert client.delete(f"/api/v1/users/{ann[0]['id']}", headers=ann[1]).status_code == 204
    refused = assert_error(client.get(user_books(ann[0]["id"])), 404, "NOT_FOUND")
    assert refused["message"] == "No user with this id."
    # The account is gone; its books are not deleted with it, and the filter still finds them.
    assert listing(client, f"{BOOKS}?owner_id={ann[0]['id']}")[0] == before


def test_owner_id_is_not_a_parameter_of_a_users_books(client, people):
    ann, bob, _ = people
    response = client.get(f"{user_books(ann[0]['id'])}?owner_id={bob[0]['id']}")
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert details == {"owner_id": "is not a known parameter"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("per_page=0", "per_page"),
        ("sort=owner_id", "sort"),
        ("year_from=x", "year_from"),
        ("fields=", "fields"),
        ("count=maybe", "count"),
        ("nope=1", "nope"),
    ],
)
def test_a_users_books_validate_as_the_catalog(client, people, query, field):
    response = client.get(f"{user_books(people[0][0]['id'])}?{query}")
    assert set(assert_error(response, 422, "VALIDATION_ERROR")["details"]) == {field}


def test_a_users_books_have_an_etag_and_answer_304(client, people):
    ann = people[0]
    url = user_books(ann[0]["id"])
    etag = client.get(url).headers["ETag"]
    assert etag.startswith('W/"')
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    post(client, ann[1], title="New")
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 200
    # another user's new book does not change Ann's list
    etag = client.get(url).headers["ETag"]
    post(client, people[1][1], title="Bob's")
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304


# --- cursors ---------------------------------------------------------------------------------


def next_link(response):
    for part in response.headers.get("Link", "").split(","):
        if part.strip().endswith('rel="next"'):
            return part.strip().split(";")[0].strip("<> ")
    return None


@pytest.mark.parametrize("sort", ["id", "-title", "published_year,-author"])
def test_a_cursor_walk_over_a_users_books(client, people, sort):
    ann = people[0]
    whole = listing(client, f"{user_books(ann[0]['id'])}?sort={sort}&per_page=100")[0]
    assert len(whole) == 4
    data, meta, response = listing(client, f"{user_books(ann[0]['id'])}?sort={sort}&per_page=1")
    seen = list(data)
    url = f"{user_books(ann[0]['id'])}?sort={sort}&per_page=1&cursor={meta['next_cursor']}"
    for _ in range(10):
        data, meta, response = listing(client, url)
        seen += data
        link = next_link(response)
        if meta["next_cursor"] is None:
            assert link is None
            break
        assert meta["page"] is None and meta["total"] is None
        parts = urlsplit(link)
        assert parts.path == user_books(ann[0]["id"])  # the same list, by its own URL
        assert parse_qs(parts.query)["cursor"] == [meta["next_cursor"]]
        url = f"{parts.path}?{parts.query}"
    assert seen == whole


def test_a_cursor_of_the_owner_filter_works_on_the_users_books_and_back(client, people):
    ann = people[0]
    filtered = f"{BOOKS}?owner_id={ann[0]['id']}&sort=title&per_page=2"
    nested = f"{user_books(ann[0]['id'])}?sort=title&per_page=2"
    whole = listing(client, f"{BOOKS}?owner_id={ann[0]['id']}&sort=title")[0]
    cursor = listing(client, filtered)[1]["next_cursor"]
    assert listing(client, f"{nested}&cursor={cursor}")[0] == whole[2:]
    cursor = listing(client, nested)[1]["next_cursor"]
    assert listing(client, f"{filtered}&cursor={cursor}")[0] == whole[2:]


def test_a_cursor_of_one_users_books_is_refused_for_another_or_the_whole_catalog(client, people):
    ann, bob, _ = people
    cursor = listing(client, f"{user_books(ann[0]['id'])}?per_page=2")[1]["next_cursor"]
    for url in (
        f"{user_books(bob[0]['id'])}?per_page=2&cursor={cursor}",
        f"{BOOKS}?per_page=2&cursor={cursor}",
        f"{BOOKS}?owner_id={bob[0]['id']}&per_page=2&cursor={cursor}",
    ):
        details = assert_error(client.get(url), 422, "VALIDATION_ERROR")["details"]
        assert set(details) == {"cursor"} and "other filters" in details["cursor"], url
    catalog_cursor = listing(client, f"{BOOKS}?per_page=2")[1]["next_cursor"]
    response = client.get(f"{user_books(ann[0]['id'])}?per_page=2&cursor={catalog_cursor}")
    assert set(assert_error(response, 422, "VALIDATION_ERROR")["details"]) == {"cursor"}


def test_a_cursor_walk_while_the_owner_adds_and_deletes(client, people):
    ann, bob = people[0], people[1]
    url = f"{user_books(ann[0]['id'])}?per_page=2&sort=id"
    data, meta, _ = listing(client, url)
    seen = list(data)
    deleted = data[-1]["id"]
    assert client.delete(f"{BOOKS}/{deleted}", headers=ann[1]).status_code == 204
    added = post(client, ann[1], title="Late")
    post(client, bob[1], title="Not Ann's")
    following = f"{user_books(ann[0]['id'])}?per_page=10&sort=id&cursor={meta['next_cursor']}"
    rest = listing(client, following)[0]
    seen += rest
    assert ids(rest) == ids(owned_by(client, ann))[1:]  # the live ones after the position
    assert added["id"] in ids(seen) and len(set(ids(seen))) == len(seen)
    assert {b["owner_id"] for b in seen} == {ann[0]["id"]}


# --- the document ----------------------------------------------------------------------------


def test_the_document_declares_both(client):
    document = client.get("/api/v1/openapi.json").get_json()
    catalog = document["paths"]["/api/v1/books"]["get"]
    [owner_id] = [p for p in catalog["parameters"] if p["name"] == "owner_id"]
    assert owner_id["in"] == "query" and owner_id["schema"] == {
        "type": "integer",
        "format": "int32",
        "minimum": 1,
        "maximum": 2**31 - 1,
    }
    nested = document["paths"]["/api/v1/users/{user_id}/books"]
    assert nested["parameters"][0]["schema"]["format"] == "int32"
    operation = nested["get"]
    assert operation["security"] == [] and operation["tags"] == ["books"]
    assert {"200", "304", "404", "422"} <= set(operation["responses"])
    assert "401" not in operation["responses"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    catalog_names = {p["name"] for p in catalog["parameters"] if p["in"] == "query"}
    assert names == catalog_names - {"owner_id"}
    assert (
        operation["responses"]["200"]["content"]["application/json"]["schema"]
        == catalog["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert {"ETag", "Link"} <= set(operation["responses"]["200"]["headers"])
