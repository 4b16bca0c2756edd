"""SPEC 9: every allowed filter and sort of live books is served by an index (migrations 0005
and 0008): the first page reads index entries in order instead of every match. Shown by the
plans of the queries the app runs, on whichever database the suite is on."""

import pytest
from sqlalchemy import text

from bookshelf.extensions import db
from bookshelf.services import books as service

OWNER = 1  # the first of the catalog's five owners


@pytest.fixture
def catalog(app, auth):
    """Fills the books in the test's own transaction (rolled back, with the statistics that
    ANALYZE gathered in it, so other tests' plans are not affected): enough books, and the
    planner's statistics, for indexes to be worth their while."""
    owners = [auth.user()[0]["id"] for _ in range(5)]

    def fill(conn):
        conn.execute(
            text(
                "INSERT INTO books (title, author, genre, published_year, owner_id, created_at, "
                "updated_at, change_seq) VALUES (:t, :a, :g, :y, :o, :c, :c, 0)"
            ),
            [
                {
                    "t": f"Book {n}",
                    "a": f"Author {n % 300}",
                    "g": f"Genre {n % 20}",
                    "y": None if n % 10 == 0 else 1800 + n % 200,
                    "o": owners[0] if n % 100 == 0 else owners[1 + n % 4],  # 1% the first's
                    "c": "2026-01-01 00:00:00",
                }
                for n in range(3000)
            ],
        )
        conn.exec_driver_sql("ANALYZE books")

    return fill


def plan_of(catalog, filters: dict, keys: tuple) -> str:
    """The plan of the first page of `GET /books` with these filters and sort keys, in a
    transaction the caller rolls back."""
    read = service._page_read(frozenset(filters), keys, None)
    conn = db.session.connection()
    catalog(conn)
    sql, positions, _, _ = read._compile(conn.dialect)
    params = filters | {"limit": 21, "offset": 0}
    if positions is not None:
        params = tuple(params[name] for name in positions)
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(row[3] for row in rows)
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    if not {"year_from", "year_to"} & set(filters):  # a range is read, then sorted by id
        conn.exec_driver_sql("SET LOCAL enable_sort = off")  # an index in order, if any
    return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", params))


ID_ORDER = (("id", False),)


@pytest.mark.parametrize(
    ("filters", "keys", "index"),
    [
        ({"author": "author 7"}, ID_ORDER, "ix_books_author_lower_live"),
        ({"genre": "genre 3"}, ID_ORDER, "ix_books_genre_lower_live"),
        ({"owner_id": OWNER}, ID_ORDER, "ix_books_owner_live"),
        ({}, (("title", False), ("id", False)), "ix_books_title_live"),
        ({}, (("author", False), ("id", False)), "ix_books_author_live"),
        ({}, (("created_at", False), ("id", False)), "ix_books_created_at_live"),
        ({}, (("published_year", False), ("id", False)), "ix_books_published_year_live"),
        ({"year_from": 1900, "year_to": 1901}, ID_ORDER, "ix_books_published_year"),  # either
    ],
    ids=["author", "genre", "owner", "title", "by-author", "created_at", "year", "years"],
)
def test_each_filter_and_sort_reads_an_index_of_live_books(app, catalog, filters, keys, index):
    with app.app_context():
        plan = plan_of(catalog, filters, keys)
        db.session.rollback()
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan or "year_from" in filters, plan  # SQLite: no sort


def test_years_descending_with_books_without_a_year_last_has_its_own_index(app, catalog):
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            pytest.skip("PostgreSQL only: SQLite's indexes cannot put NULLs last")
        plan = plan_of(catalog, {}, (("published_year", True), ("id", False)))
        db.session.rollback()
    assert "ix_books_published_year_desc_live" in plan, plan
    assert "Sort" not in plan, plan
