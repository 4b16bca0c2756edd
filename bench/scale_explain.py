"""The query plans behind the scale table: `python bench/scale_explain.py SIZE [DATABASE_URL]`.

Makes a catalog of SIZE books as bench/scale.py does (SQLite under bench/results/ when no URL is
given; a PostgreSQL URL's database must be named like bookshelf_scale), asks the app, in process,
for each list shape of the table, and prints the plan of every statement the request ran (SQLite:
EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN (ANALYZE, BUFFERS)) and the request's time. The catalog is
dropped afterwards unless BENCH_SCALE_KEEP=1.
"""

import os
import sys
import time

import run
import scale
import scaledata
from sqlalchemy import make_url

from bookshelf import create_app
from bookshelf.database import PreparedRead
from bookshelf.extensions import db

BASE = "http://127.0.0.1"  # an allowed host


def capture() -> list:
    """Every PreparedRead's SQL and arguments from now on, into the list returned."""
    seen, original = [], PreparedRead.rows

    def rows(self, **params):
        sql, positions, _, _ = self._compile(db.engine.dialect)
        seen.append((sql, params if positions is None else [params[n] for n in positions]))
        return original(self, **params)

    PreparedRead.rows = rows
    return seen


def explain(sql: str, args) -> str:
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        if db.engine.dialect.name == "postgresql":
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", args)
            return "\n".join(f"    {row[0]}" for row in cursor.fetchall())
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", args)
        return "\n".join(f"    {row[-1]}" for row in cursor.fetchall())
    finally:
        connection.close()


def main() -> int:
    size = int(sys.argv[1])
    url = sys.argv[2] if len(sys.argv) > 2 else scale.dataset.sqlite_url(scale.SQLITE_PATH)
    bench = run.Bench(run.Settings.from_env())
    db_name = make_url(url).get_backend_name()
    bench.urls[db_name] = url
    env = bench.bookshelf_env(db_name, 0) | {"LOG_LEVEL": "WARNING"}
    scaledata.prepare(url, size, env, run.ROOT, run.LOGS / f"scale-explain-{db_name}.log")
    try:
        os.environ.update(env)
        app = create_app(commands=False)
        get = app.test_client().get
        seen = capture()
        with app.app_context():
            for name, path in scale.shapes(scaledata.live_books(url)[0]):
                if path == "cursor":
                    path = "/api/v1/books?per_page=20"
                    for _ in range(scale.CURSOR_PAGES):
                        cursor = get(path, base_url=BASE).get_json()["meta"]["next_cursor"]
                        path = f"/api/v1/books?per_page=20&cursor={scale.quote(cursor)}"
                if get(path, base_url=BASE).status_code != 200:  # and warm
                    raise RuntimeError(f"GET {path} failed")
                seen.clear()
                started = time.perf_counter()
                get(path, base_url=BASE)
                took = (time.perf_counter() - started) * 1000
                out = [f"## {name}: {took:.1f} ms in process"]
                out += [f"  {sql}\n  {args}\n{explain(sql, args)}" for sql, args in list(seen)]
                sys.stdout.write("\n".join(out) + "\n")
    finally:
        if os.environ.get("BENCH_SCALE_KEEP") != "1":
            scale.drop(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
