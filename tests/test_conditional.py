"""Conditional requests: ETag / If-None-Match for caching, If-Match for optimistic concurrency,
and gzip that keeps both working."""

import gzip

import pytest

from tests.support import assert_error

BOOKS = "/api/v1/books"


@pytest.fixture
def owner(auth):
    return auth.user()


@pytest.fixture
def book(client, owner):
    response = client.post(
        BOOKS, json={"title": "Dune", "author": "Frank Herbert"}, headers=owner[1]
    )
    assert response.status_code == 201
    return response.get_json()["data"]


def url(book):
    return f"{BOOKS}/{book['id']}"


def etag_of(client, path, headers=None):
    response = client.get(path, headers=headers or {})
    assert response.status_code == 200
    return response.headers["ETag"]


# ETag and If-None-Match


def test_a_book_has_a_strong_etag_that_304s(client, book):
    etag = etag_of(client, url(book))
    assert etag.startswith('"') and not etag.startswith("W/")
    response = client.get(url(book), headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.get_data() == b""
    assert response.headers["ETag"] == etag
    assert response.headers["X-Request-ID"]


def test_a_stale_if_none_match_gets_the_full_response(client, book):
    response = client.get(url(book), headers={"If-None-Match": '"something-else"'})
    assert response.status_code == 200
    assert response.get_json()["data"] == book


def test_the_etag_changes_when_the_representation_changes(client, owner, book):
    before = etag_of(client, url(book))
    assert etag_of(client, url(book)) == before  # stable while nothing changes
    patched = client.patch(url(book), json={"genre": "SF"}, headers=owner[1])
    assert patched.headers["ETag"] != before
    assert etag_of(client, url(book)) == patched.headers["ETag"]
    assert client.get(url(book), headers={"If-None-Match": before}).status_code == 200


def test_create_returns_the_etag_of_the_new_book(client, owner):
    created = client.post(BOOKS, json={"title": "Emma", "author": "Austen"}, headers=owner[1])
    assert created.headers["ETag"] == etag_of(client, created.headers["Location"])


@pytest.mark.parametrize("path", ["/api/v1/auth/me", "/api/v1/users/{id}"])
def test_users_have_etags_too(client, owner, path):
    user, headers = owner
    path = path.format(id=user["id"])
    etag = etag_of(client, path, headers)
    response = client.get(path, headers=headers | {"If-None-Match": etag})
    assert response.status_code == 304 and response.headers["ETag"] == etag


def test_lists_have_a_weak_etag_and_honour_if_none_match(client, owner, book):
    etag = etag_of(client, BOOKS)
    assert etag.startswith('W/"')
    assert client.get(BOOKS, headers={"If-None-Match": etag}).status_code == 304
    # Another page, another filter, or a change in the data: another tag.
    assert etag_of(client, BOOKS + "?per_page=5") != etag
    client.post(BOOKS, json={"title": "Emma", "author": "Austen"}, headers=owner[1])
    assert client.get(BOOKS, headers={"If-None-Match": etag}).status_code == 200


def test_if_none_match_star_304s_an_existing_resource(client, book):
    assert client.get(url(book), headers={"If-None-Match": "*"}).status_code == 304


# If-Match


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_a_stale_if_match_is_412_and_changes_nothing(client, owner, book, method):
    stale = etag_of(client, url(book))
    client.patch(url(book), json={"genre": "SF"}, headers=owner[1])
    current = client.get(url(book)).get_json()["data"]
    body = {"title": "Changed", "author": "Someone"} if method != "delete" else None
    response = getattr(client, method)(url(book), json=body, headers=owner[1] | {"If-Match": stale})
    error = assert_error(response, 412, "PRECONDITION_FAILED")
    assert "changed" in error["message"]
    assert client.get(url(book)).get_json()["data"] == current


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_a_current_if_match_goes_through(client, owner, book, method):
    etag = etag_of(client, url(book))
    body = {"title": "Changed", "author": "Someone"} if method != "delete" else None
    response = getattr(client, method)(url(book), json=body, headers=owner[1] | {"If-Match": etag})
    assert response.status_code == (204 if method == "delete" else 200)


def test_if_match_accepts_one_of_several_tags_and_star(client, owner, book):
    etag = etag_of(client, url(book))
    response = client.patch(
        url(book), json={"genre": "A"}, headers=owner[1] | {"If-Match": f'"nope", {etag}'}
    )
    assert response.status_code == 200
    response = client.patch(url(book), json={"genre": "B"}, headers=owner[1] | {"If-Match": "*"})
    assert response.status_code == 200


def test_if_match_star_on_a_deleted_book_is_404(client, owner, book):
    client.delete(url(book), headers=owner[1])
    response = client.patch(url(book), json={"genre": "A"}, headers=owner[1] | {"If-Match": "*"})
    assert_error(response, 404, "NOT_FOUND")


def test_a_weak_tag_never_satisfies_if_match(client, owner, book):
    etag = etag_of(client, url(book))
    response = client.patch(
        url(book), json={"genre": "A"}, headers=owner[1] | {"If-Match": "W/" + etag}
    )
    assert_error(response, 412, "PRECONDITION_FAILED")


def test_not_the_owner_is_403_before_any_precondition(client, auth, book):
    _, stranger = auth.user()
    response = client.patch(url(book), json={"genre": "A"}, headers=stranger | {"If-Match": '"x"'})
    assert_error(response, 403, "FORBIDDEN")


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_users_honour_if_match(client, owner, method):
    user, headers = owner
    path = f"/api/v1/users/{user['id']}"
    stale = etag_of(client, path, headers)
    client.patch(path, json={"name": "New name"}, headers=headers)
    body = {"name": "X", "email": user["email"]} if method != "delete" else None
    response = getattr(client, method)(path, json=body, headers=headers | {"If-Match": stale})
    assert_error(response, 412, "PRECONDITION_FAILED")
    fresh = etag_of(client, path, headers)
    response = getattr(client, method)(path, json=body, headers=headers | {"If-Match": fresh})
    assert response.status_code in (200, 204)


# Compression


def test_large_responses_are_gzipped_on_request(client, owner):
    for i in range(20):
        client.post(BOOKS, json={"title": f"Book {i}", "author": "Author"}, headers=owner[1])
    plain = client.get(BOOKS)
    zipped = client.get(BOOKS, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert int(zipped.headers["Content-Length"]) < int(plain.headers["Content-Length"])
    import json

    assert json.loads(gzip.decompress(zipped.get_data()))["data"] == plain.get_json()["data"]


def test_small_responses_are_not_compressed(client):
    response = client.get("/health", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in response.headers
    assert "Accept-Encoding" in response.headers["Vary"]


def test_etags_stay_correct_with_compression(client, owner):
    response = client.post(
        BOOKS, json={"title": "T" * 200, "author": "A" * 200, "genre": "G" * 100}, headers=owner[1]
    )
    path = response.headers["Location"]
    plain = client.get(path).headers["ETag"]
    zipped = client.get(path, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    # The gzip variant is another representation, so another strong tag.
    assert zipped.headers["ETag"] == plain[:-1] + ':gzip"'
    again = client.get(
        path, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]}
    )
    assert again.status_code == 304
    # Either tag names the same state for If-Match.
    response = client.patch(
        path, json={"genre": "Short"}, headers=owner[1] | {"If-Match": zipped.headers["ETag"]}
    )
    assert response.status_code == 200
