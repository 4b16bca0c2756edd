"""`q` through its index (migration 0006): the same books on SQLite and PostgreSQL.

The expectations are written out, not computed: the suite runs on both databases (CI runs it
both ways), so each list below is checked against each database.
"""

import sqlite3
import sys

import pytest
from sqlalchemy import text

from bookshelf.extensions import db
from bookshelf.services import books as service
from tests.test_books import BOOKS, new_book, titles

CATALOG = [
    # (title, author)
    ("Dead Souls", "Nikolai Gogol"),
    ("The Dead Zone", "Stephen King"),
    ("DEADLINE", "Anon"),
    ("Moby-Dick", "Herman Melville"),
    ("L'École des femmes", "Molière"),
    ("Das große Heft", "Ágota Kristóf"),
    ("STRAẞE", "Unknown Writer"),
    ("Ünïcode Tales", "Ola Nordmann"),
    ("三体", "刘慈欣"),
    ("Books 📚 and more", "Emoji Author"),
    ("100% Pure", "Percent Writer"),
    ("snake_case", "Underscore Writer"),
    ("snakeXcase", "Lookalike"),
    ("Σοφία", "ΟΔΥΣΣΕΑΣ Ελύτης"),
]

SEARCHES = [
    ("dead", ["Dead Souls", "The Dead Zone", "DEADLINE"]),
    ("DEAD", ["Dead Souls", "The Dead Zone", "DEADLINE"]),
    (
        "de",
        [
            "Dead Souls",
            "The Dead Zone",
            "DEADLINE",
            "L'École des femmes",
            "Ünïcode Tales",
            "snake_case",
        ],
    ),
    ("d z", ["The Dead Zone"]),
    ("école", ["L'École des femmes"]),
    ("ÉCOLE", ["L'École des femmes"]),
    ("ecole", []),  # accents count
    ("è", ["L'École des femmes"]),  # in the author, Molière
    ("ß", ["Das große Heft", "STRAẞE"]),
    ("ss", []),  # ß is not "ss"
    ("Ünï", ["Ünïcode Tales"]),
    ("üNÏ", ["Ünïcode Tales"]),
    ("kristóf", ["Das große Heft"]),
    ("三体", ["三体"]),
    ("慈", ["三体"]),
    ("📚", ["Books 📚 and more"]),
    ("s 📚 a", ["Books 📚 and more"]),
    ("%", ["100% Pure"]),
    ("0% p", ["100% Pure"]),
    ("_", ["snake_case"]),
    ("e_c", ["snake_case"]),
    ("σοφ", ["Σοφία"]),
    ("ΣΟΦΊΑ", ["Σοφία"]),
    ("οδυσσ", ["Σοφία"]),
    ("king", ["The Dead Zone"]),
    ("nothing like it", []),
]


@pytest.fixture
def catalog(client, auth):
    _, headers = auth.user()
    ids = {}
    for title, author in CATALOG:
        response = client.post(BOOKS, json=new_book(title=title, author=author), headers=headers)
        assert response.status_code == 201, response.json
        ids[title] = response.json["data"]["id"]
    return headers, ids


@pytest.mark.parametrize(("q", "expected"), SEARCHES, ids=[q for q, _ in SEARCHES])
def test_the_same_books_on_both_databases(client, catalog, q, expected):
    assert titles(client, f"q={_quoted(q)}&per_page=100") == expected


def test_pages_by_cursor_and_counts_work_with_q(client, catalog):
    response = client.get(f"{BOOKS}?q=dead&per_page=2")
    body = response.json
    assert [b["title"] for b in body["data"]] == ["Dead Souls", "The Dead Zone"]
    assert body["meta"]["total"] == 3
    cursor = body["meta"]["next_cursor"]
    following = client.get(f"{BOOKS}?q=dead&per_page=2&cursor={cursor}").json
    assert [b["title"] for b in following["data"]] == ["DEADLINE"]
    assert following["meta"]["next_cursor"] is None


def test_the_index_follows_changes_and_deletions(app, client, catalog):
    headers, ids = catalog
    book = ids["Dead Souls"]
    etag = client.get(f"{BOOKS}/{book}").headers["ETag"]
    patched = client.patch(
        f"{BOOKS}/{book}", json={"title": "Live Souls"}, headers=headers | {"If-Match": etag}
    )
    assert patched.status_code == 200
    assert titles(client, "q=dead") == ["The Dead Zone", "DEADLINE"]
    assert titles(client, "q=live+soul") == ["Live Souls"]

    assert client.delete(f"{BOOKS}/{ids['DEADLINE']}", headers=headers).status_code == 204
    assert titles(client, "q=dead") == ["The Dead Zone"]  # soft-deleted books are not found

    with app.app_context(), db.engine.begin() as conn:  # restored, then removed for good
        conn.execute(
            text("UPDATE books SET deleted_at = NULL WHERE id = :id"), {"id": ids["DEADLINE"]}
        )
    assert titles(client, "q=dead") == ["The Dead Zone", "DEADLINE"]
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("DELETE FROM books WHERE id = :id"), {"id": ids["The Dead Zone"]})
    assert titles(client, "q=dead") == ["DEADLINE"]
    if _dialect(app) == "sqlite":  # the FTS table holds exactly what the triggers put there
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(text("INSERT INTO books_fts (books_fts) VALUES ('integrity-check')"))


def test_the_index_serves_q(app, catalog):
    with app.app_context(), db.engine.connect() as conn:
        sql, params = _search_sql(conn, "dead")
        if conn.dialect.name == "sqlite":
            plan = " ".join(
                row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            )
            assert "books_fts VIRTUAL TABLE INDEX" in plan, plan
        else:
            # On a few rows any index of live books looks as cheap: set those aside (this
            # transaction is rolled back) so that the plan shows which index serves ILIKE.
            others = conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'books' "
                "AND indexdef LIKE '%%deleted_at IS NULL%%' AND indexname NOT LIKE '%%_trgm'"
            ).scalars()
            conn.exec_driver_sql(f"DROP INDEX {', '.join(others)}")
            conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql("SET enable_indexscan = off")  # nor the primary key's order
            plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", params))
            assert "Bitmap Index Scan on ix_books_title_trgm" in plan, plan
            assert "Bitmap Index Scan on ix_books_author_trgm" in plan, plan


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 34), reason="no trigram tokenizer")
def test_without_the_fts_table_sqlite_scans_with_the_same_results(app, client, catalog):
    if _dialect(app) != "sqlite":
        pytest.skip("SQLite only")
    with app.app_context(), db.engine.begin() as conn:  # as an SQLite older than 3.34 migrates
        for trigger in ("insert", "update", "delete"):
            conn.exec_driver_sql(f"DROP TRIGGER books_fts_{trigger}")
        conn.exec_driver_sql("DROP TABLE books_fts")
        service._fts_tables.clear()
    try:
        for q, expected in SEARCHES:
            assert titles(client, f"q={_quoted(q)}&per_page=100") == expected, q
    finally:
        service._fts_tables.clear()


@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 34), reason="no trigram tokenizer")
def test_the_letters_fts5_folds_otherwise_than_python_are_known():
    """`services.books._FTS_UNFOLDED` is what the SQLite in use does: the index is only asked
    about letters whose every uppercase form it folds as str.lower() does."""
    probe = sqlite3.connect(":memory:")
    probe.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram case_sensitive 0')")
    unfolded = set()
    for code in range(0x1F000):
        upper = chr(code)
        lower = upper.lower()
        if len(lower) != 1 or lower == upper or not 0 <= code <= sys.maxunicode:
            continue
        probe.execute("DELETE FROM t")
        probe.execute("INSERT INTO t VALUES (?)", (upper * 3,))
        if not probe.execute(
            "SELECT count(*) FROM t WHERE t MATCH ?", (f'"{lower * 3}"',)
        ).fetchone()[0]:
            unfolded.add(lower)
    assert unfolded == set(service._FTS_UNFOLDED)


def _quoted(q):
    from urllib.parse import quote

    return quote(q, safe="")


def _dialect(app):
    with app.app_context():
        return db.engine.dialect.name


def _search_sql(conn, q):
    """The page query of `GET /books?q=...` as the app runs it, with its values."""
    values = service._q_values(q)
    read = service._page_read(frozenset(values), (("id", False),), None)
    sql, positions, _, _ = read._compile(conn.dialect)
    params = values | {"limit": 21, "offset": 0}
    if positions is None:
        return sql, params
    return sql, tuple(params[name] for name in positions)
