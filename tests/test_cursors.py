"""GET /books by cursor, and counts that stop (SPEC.md section 9, "Catalog at scale").

A walk that follows `Link: rel="next"` while books are added and deleted between pages must see
no book twice and miss none that lived throughout, in every sort, NULL years included.
"""

import base64
import functools
import random
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from bookshelf.services import books as books_service
from tests.support import assert_error

BOOKS = "/api/v1/books"
SORTS = [
    "id",
    "-id",
    "title",
    "-title",
    "author",
    "-author",
    "published_year",
    "-published_year",
    "created_at",
    "-created_at",
    "author,-published_year",
    "-published_year,title",
    "published_year,-author,-title",
    "-title,id",
]
LETTERS = "abc"  # lowercase ASCII only: the same order in Python and in any database collation
AUTHORS = ["ann", "bob", "cyd"]
YEARS = [None, None, 1900, 1950, 2000]


# --- helpers ---------------------------------------------------------------------------------


def random_book(rng):
    body = {
        "title": "".join(rng.choices(LETTERS, k=2)),
        "author": rng.choice(AUTHORS),
    }
    year = rng.choice(YEARS)
    if year is not None:
        body["published_year"] = year
    return body


def post(client, headers, body):
    response = client.post(BOOKS, json=body, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["data"]


def get_list(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    return response, body["data"], body["meta"]


def next_link(response):
    """The `rel="next"` target of the Link header, or None; checks it is absolute."""
    for part in response.headers.get("Link", "").split(","):
        if part.strip().endswith('rel="next"'):
            url = part.strip().split(";")[0].strip("<> ")
            assert url.startswith("http://localhost/api/v1/books?"), url
            return url
    return None


def relative(url):
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def order_of(sort):
    """A comparator of books in `sort`'s order: NULLs last both ways, id ascending breaks ties."""
    keys = [(part.lstrip("-"), part.startswith("-")) for part in sort.split(",")]
    if "id" not in {key for key, _ in keys}:
        keys.append(("id", False))

    def value(book, key):
        if key == "created_at":
            return datetime.fromisoformat(book[key].replace("Z", "+00:00"))
        return book[key]

    def compare(a, b):
        for key, desc in keys:
            x, y = value(a, key), value(b, key)
            if x == y:
                continue
            if x is None or y is None:
                return 1 if x is None else -1
            return (1 if x > y else -1) * (-1 if desc else 1)
        return 0

    return compare


def walk(client, headers, query, rng, *, changes=True, per_page=4):
    """Walk `query` by cursor: the first page's `meta.next_cursor`, then each cursor page's
    `Link: rel="next"`, adding and deleting books at random between pages. (seen books, ids that
    lived throughout, ids added during the walk)."""
    live = {b["id"]: b for b in get_list(client, f"{BOOKS}?per_page=100&sort=id")[1]}
    throughout, added = set(live), set()
    url, seen = f"{BOOKS}?{query}&per_page={per_page}", []
    for _ in range(100):
        response, data, meta = get_list(client, url)
        seen += data
        link = next_link(response)
        if meta["next_cursor"] is None:
            assert link is None
            break
        if meta["page"] is None:  # a cursor page links to the next by cursor
            assert parse_qs(urlsplit(link).query)["cursor"] == [meta["next_cursor"]]
            url = relative(link)
        else:  # a page by number links to the next by number
            url = f"{BOOKS}?{query}&per_page={per_page}&cursor={meta['next_cursor']}"
        if not changes:
            continue
        for _ in range(rng.randint(0, 2)):
            book = post(client, headers, random_book(rng))
            live[book["id"]] = book
            added.add(book["id"])
        for book_id in rng.sample(sorted(live), min(len(live), rng.randint(0, 2))):
            assert client.delete(f"{BOOKS}/{book_id}", headers=headers).status_code == 204
            del live[book_id]
            throughout.discard(book_id)
    else:
        pytest.fail("the walk did not end")
    return seen, throughout, added


def tampered(cursor):
    """`cursor` with one character of its body changed, still valid base64url."""
    body, mac = cursor.split(".")
    index = len(body) // 2
    replacement = "A" if body[index] != "A" else "B"
    return f"{body[:index]}{replacement}{body[index + 1 :]}.{mac}"


def assert_cursor_refused(response, *also):
    details = assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert set(details) == {"cursor", *also}, details
    return details


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def owner(auth):
    return auth.user()[1]


@pytest.fixture
def shelf(client, owner):
    """22 books with repeated titles, authors and years (a third without a year)."""
    rng = random.Random(22)
    return [post(client, owner, random_book(rng)) for _ in range(22)]


@pytest.fixture
def first_cursor(client, shelf):
    _, _, meta = get_list(client, f"{BOOKS}?sort=title&per_page=5")
    return meta["next_cursor"]


# --- walking by cursor -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("sort", SORTS)
def test_a_cursor_walk_is_stable_while_books_come_and_go(client, owner, shelf, sort, seed):
    rng = random.Random(f"{sort}/{seed}")
    seen, throughout, _ = walk(client, owner, f"sort={sort}", rng)
    ids = [book["id"] for book in seen]
    assert len(ids) == len(set(ids)), "a book was seen twice"
    assert throughout <= set(ids), "a book that lived throughout was skipped"
    compare = order_of(sort)
    assert all(compare(a, b) < 0 for a, b in zip(seen, seen[1:], strict=False)), (
        "the walk went backwards"
    )


@pytest.mark.parametrize("sort", ["title", "-published_year", "published_year,-author"])
def test_a_cursor_walk_keeps_the_filters(client, owner, shelf, sort):
    rng = random.Random(sort)
    seen, throughout, _ = walk(client, owner, f"author=Bob&sort={sort}", rng)
    assert {book["author"] for book in seen} <= {"bob"}
    ids = [book["id"] for book in seen]
    assert len(ids) == len(set(ids))
    everyone = {b["id"]: b for b in get_list(client, f"{BOOKS}?per_page=100")[1]}
    assert {i for i in throughout if everyone.get(i, {}).get("author") == "bob"} <= set(ids)


@pytest.mark.parametrize("sort", SORTS)
def test_without_changes_a_cursor_walk_equals_the_whole_list(client, owner, shelf, sort):
    whole = get_list(client, f"{BOOKS}?sort={sort}&per_page=100")[1]
    seen, _, _ = walk(client, owner, f"sort={sort}", random.Random(0), changes=False, per_page=3)
    assert seen == whole
    assert sorted(whole, key=functools.cmp_to_key(order_of(sort))) == whole


def test_the_book_a_cursor_points_at_may_be_deleted(client, owner, shelf):
    _, data, meta = get_list(client, f"{BOOKS}?sort=-published_year&per_page=10")
    assert client.delete(f"{BOOKS}/{data[-1]['id']}", headers=owner).status_code == 204
    _, following, _ = get_list(
        client, f"{BOOKS}?sort=-published_year&per_page=100&cursor={meta['next_cursor']}"
    )
    whole = get_list(client, f"{BOOKS}?sort=-published_year&per_page=100")[1]
    assert following == whole[9:]


def test_cursor_pages_are_not_counted_and_link_only_next(client, shelf):
    _, _, meta = get_list(client, f"{BOOKS}?per_page=5&sort=-author&author=ann")
    assert meta["total_exact"] is True and meta["next_cursor"]
    cursor = meta["next_cursor"]
    response, data, meta = get_list(
        client, f"{BOOKS}?per_page=5&sort=-author&author=ann&cursor={cursor}"
    )
    assert (meta["page"], meta["total"], meta["pages"], meta["total_exact"]) == (None,) * 4
    assert meta["per_page"] == 5 and len(data) <= 5
    query = parse_qs(urlsplit(next_link(response) or "http://x/?").query)
    if meta["next_cursor"]:
        assert query == {
            "per_page": ["5"],
            "sort": ["-author"],
            "author": ["ann"],
            "cursor": [meta["next_cursor"]],
        }
        assert [part.split(";")[1].strip() for part in response.headers["Link"].split(",")] == [
            'rel="next"'
        ]


def test_the_last_page_has_no_next_cursor(client, owner):
    for title in ("aa", "bb", "cc"):
        post(client, owner, {"title": title, "author": "ann"})
    response, data, meta = get_list(client, f"{BOOKS}?per_page=2")
    assert meta["next_cursor"] and parse_qs(urlsplit(next_link(response)).query)["page"] == ["2"]
    response, data, meta = get_list(client, f"{BOOKS}?per_page=2&cursor={meta['next_cursor']}")
    assert [b["title"] for b in data] == ["cc"]
    assert meta["next_cursor"] is None and "Link" not in response.headers
    response, data, meta = get_list(client, f"{BOOKS}?per_page=3")
    assert meta["next_cursor"] is None


def test_per_page_may_change_between_cursor_pages(client, shelf, first_cursor):
    _, data, _ = get_list(client, f"{BOOKS}?sort=title&per_page=7&cursor={first_cursor}")
    whole = get_list(client, f"{BOOKS}?sort=title&per_page=100")[1]
    assert data == whole[5:12]


# --- refused cursors -------------------------------------------------------------------------


def test_a_tampered_cursor_is_422(client, first_cursor):
    for cursor in (
        tampered(first_cursor),
        first_cursor[:-2],
        first_cursor + "A",
        first_cursor.split(".")[0],
        "not-a-cursor",
        "a.b.c",
        "%FF%FE",
        "é",
    ):
        assert_cursor_refused(client.get(f"{BOOKS}?sort=title&cursor={cursor}"))


def test_a_forged_cursor_with_a_valid_shape_is_422(client, first_cursor):
    body = base64.urlsafe_b64encode(b'[1,["aa",1]]').rstrip(b"=").decode()
    mac = first_cursor.split(".")[1]
    assert_cursor_refused(client.get(f"{BOOKS}?sort=title&cursor={body}.{mac}"))


@pytest.mark.parametrize(
    "query",
    [
        "sort=-title",
        "sort=author",
        "",  # the default sort, id
        "sort=title&author=ann",
        "sort=title&genre=unknown",
        "sort=title&q=a",
        "sort=title&year_from=1900",
        "sort=title&year_to=2000",
    ],
)
def test_a_cursor_of_another_sort_or_other_filters_is_422(client, first_cursor, query):
    response = client.get(f"{BOOKS}?{query}&cursor={first_cursor}")
    details = assert_cursor_refused(response)
    assert "another sort or other filters" in details["cursor"]


def test_a_cursor_survives_filters_written_in_another_case(client, shelf):
    _, _, meta = get_list(client, f"{BOOKS}?author=ANN&per_page=2")
    get_list(client, f"{BOOKS}?author=ann&cursor={meta['next_cursor']}")


def test_a_cursor_with_a_page_is_422(client, first_cursor):
    assert_cursor_refused(client.get(f"{BOOKS}?sort=title&page=1&cursor={first_cursor}"), "page")
    assert_cursor_refused(client.get(f"{BOOKS}?sort=title&page=2&cursor={first_cursor}"), "page")


@pytest.mark.parametrize("cursor", ["", "x" * 2049])
def test_an_empty_or_huge_cursor_is_422(client, cursor):
    assert_cursor_refused(client.get(f"{BOOKS}?cursor={cursor}"))


def test_a_cursor_from_another_secret_is_422(make_app, shelf, first_cursor):
    other = make_app(SECRET_KEY="another-secret-that-is-long-enough-0123456789").test_client()
    assert_cursor_refused(other.get(f"{BOOKS}?sort=title&cursor={first_cursor}"))


# --- counts ----------------------------------------------------------------------------------


@pytest.fixture
def count_limit(monkeypatch):
    monkeypatch.setattr(books_service, "COUNT_LIMIT", 5)
    return 5


def test_past_the_count_limit_total_is_a_lower_bound(client, owner, count_limit):
    for n in range(8):
        post(client, owner, {"title": f"t{n}", "author": "ann" if n < 4 else "bob"})
    response, data, meta = get_list(client, f"{BOOKS}?per_page=2")
    assert (meta["total"], meta["total_exact"], meta["pages"]) == (5, False, 3)
    assert [b["title"] for b in data] == ["t0", "t1"]
    found = {part.split(";")[1].strip() for part in response.headers["Link"].split(",")}
    assert found == {'rel="first"', 'rel="next"'}  # no last: it is not known
    response, data, meta = get_list(client, f"{BOOKS}?per_page=2&page=3")
    assert (meta["total"], meta["total_exact"], meta["pages"]) == (7, False, 4)  # seen so far
    assert {p.split(";")[1].strip() for p in response.headers["Link"].split(",")} == {
        'rel="first"',
        'rel="prev"',
        'rel="next"',
    }
    # filtered counts are capped the same way; under the cap they are exact
    _, _, meta = get_list(client, f"{BOOKS}?per_page=2&q=t")
    assert (meta["total"], meta["total_exact"]) == (5, False)
    _, _, meta = get_list(client, f"{BOOKS}?per_page=2&author=bob")
    assert (meta["total"], meta["total_exact"], meta["pages"]) == (4, True, 2)


def test_the_last_page_tells_the_exact_total_past_the_limit(client, owner, count_limit):
    for n in range(8):
        post(client, owner, {"title": f"t{n}", "author": "ann"})
    response, data, meta = get_list(client, f"{BOOKS}?per_page=3&page=3")
    assert [b["title"] for b in data] == ["t6", "t7"]
    assert (meta["total"], meta["total_exact"], meta["pages"]) == (8, True, 3)
    assert "next" not in response.headers["Link"]


def test_count_false_skips_the_count(client, owner):
    for n in range(3):
        post(client, owner, {"title": f"t{n}", "author": "ann"})
    response, data, meta = get_list(client, f"{BOOKS}?per_page=2&count=false")
    assert len(data) == 2 and meta["page"] == 1
    assert (meta["total"], meta["pages"], meta["total_exact"]) == (None, None, None)
    assert meta["next_cursor"]
    links = {
        part.split(";")[1].strip(): parse_qs(urlsplit(part.split(";")[0].strip("<> ")).query)
        for part in response.headers["Link"].split(",")
    }
    assert set(links) == {'rel="first"', 'rel="next"'}
    assert links['rel="next"'] == {"per_page": ["2"], "count": ["false"], "page": ["2"]}
    _, data, meta = get_list(client, f"{BOOKS}?per_page=2&count=false&page=2")
    assert len(data) == 1 and meta["total"] is None and meta["next_cursor"] is None
    _, _, meta = get_list(client, f"{BOOKS}?per_page=2&count=true")
    assert (meta["total"], meta["total_exact"]) == (3, True)


@pytest.mark.parametrize("value", ["", "no", "0", "False", "TRUE"])
def test_count_is_true_or_false(client, value):
    details = assert_error(client.get(f"{BOOKS}?count={value}"), 422, "VALIDATION_ERROR")
    assert set(details["details"]) == {"count"}


def test_the_document_declares_cursor_and_count(client):
    document = client.get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/books"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert parameters["cursor"]["schema"]["type"] == "string"
    assert parameters["count"]["schema"] == {
        "type": "boolean",
        "default": True,
        "description": parameters["count"]["schema"]["description"],
    }
    page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    envelope = document["components"]["schemas"][page.rsplit("/", 1)[1]]
    meta = document["components"]["schemas"][envelope["properties"]["meta"]["$ref"].rsplit("/")[-1]]
    assert {"next_cursor", "total_exact"} <= set(meta["required"])
    assert meta["properties"]["total"]["type"] == ["integer", "null"]
    assert meta["properties"]["next_cursor"]["type"] == ["string", "null"]
