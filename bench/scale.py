"""The catalog at scale: `python bench/scale.py` (`make bench-scale`).

For each size and database, a fresh catalog (bench/scaledata.py), one Bookshelf server and the
bare one-row reference (c) on it, then for each list shape: the single-client p50 (one
keep-alive connection, a few requests of warm-up, then up to 20) and wrk's req/s (run.py's
connections and threads). Writes bench/results/scale.md and scale.json, goals included.

Knobs (environment):
  BENCH_SCALE_SIZES     comma-separated numbers of books (default 10000,100000,1000000)
  BENCH_SCALE_DURATION  seconds of wrk per shape (default 5)
  BENCH_DATABASE_URL    also PostgreSQL: the server of this URL, database bookshelf_scale
                        (dropped and made afresh per size, dropped at the end)
"""

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import dataset
import install
import load
import run
import scaledata
import scalereport
from machine import CpuWatch
from progress import log
from servers import HOST, Server, free_port
from sqlalchemy import make_url

SQLITE_PATH = run.RESULTS / "scale.db"
PG_DATABASE = "bookshelf_scale"
SAMPLES = 20  # timed single-client requests per shape
WARMUP = 3
SAMPLE_BUDGET_S = 8  # fewer samples (at least 5) for a shape slower than this allows
CURSOR_PAGES = 50  # the deep cursor page: the one reached after following this many


def settings() -> tuple[list[int], float, str | None]:
    raw = os.environ.get("BENCH_SCALE_SIZES", "").strip() or "10000,100000,1000000"
    try:
        sizes = sorted({int(part) for part in raw.split(",") if part.strip()})
        duration = float(os.environ.get("BENCH_SCALE_DURATION", "").strip() or 5)
    except ValueError:
        sys.exit(
            "bench: BENCH_SCALE_SIZES must be numbers separated by commas, and "
            "BENCH_SCALE_DURATION a number"
        )
    if not sizes or min(sizes) < 1000 or not 1 <= duration <= 120:
        sys.exit("bench: sizes of 1000 books or more, a duration of 1 to 120 s")
    pg = os.environ.get("BENCH_DATABASE_URL", "").strip() or None
    if pg:
        pg = make_url(pg).set(database=PG_DATABASE).render_as_string(hide_password=False)
    return sizes, duration, pg


def shapes(live: int) -> list[tuple[str, str]]:
    """(name, path) of each list shape measured; `live` books in the catalog."""
    books = "/api/v1/books?per_page=20"
    last_page = max(1, (live - 1) // 20)  # the last full page
    return [
        ("first page", books),
        ("first page, count=false", f"{books}&count=false"),
        ("deep page by number (the last)", f"{books}&page={last_page}"),
        (f"deep cursor page (after {CURSOR_PAGES})", "cursor"),
        (f"author={scaledata.AUTHOR}", f"{books}&author={quote(scaledata.AUTHOR)}"),
        (f"genre={scaledata.GENRE}", f"{books}&genre={scaledata.GENRE}"),
        (f"q={scaledata.Q_RARE} (0.1%)", f"{books}&q={scaledata.Q_RARE}"),
        (f"q={scaledata.Q_COMMON} (5%)", f"{books}&q={scaledata.Q_COMMON}"),
        (f"q={scaledata.Q_SHORT} (2 characters)", f"{books}&q={scaledata.Q_SHORT}"),
        ("sort=title", f"{books}&sort=title"),
        ("sort=-published_year", f"{books}&sort=-published_year"),
        ("sort=author", f"{books}&sort=author"),
        ("sort=-created_at", f"{books}&sort=-created_at"),
        ("year_from=1990&year_to=1999", f"{books}&year_from=1990&year_to=1999"),
        (f"owner_id={scaledata.OWNER_ID}", f"{books}&owner_id={scaledata.OWNER_ID}"),
    ]


class Client:
    """One keep-alive connection to a server."""

    def __init__(self, server: Server):
        self.conn = http.client.HTTPConnection(HOST, server.port, timeout=60)

    def get(self, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")
        return elapsed, body

    def p50(self, path: str) -> tuple[float, int]:
        """The median of up to SAMPLES requests after WARMUP, and how many were timed."""
        for _ in range(WARMUP):
            first, _ = self.get(path)
        n = max(5, min(SAMPLES, int(SAMPLE_BUDGET_S * 1000 / max(first, 0.1))))
        return statistics.median(self.get(path)[0] for _ in range(n)), n

    def deep_cursor(self, path: str) -> str:
        """The path of the page reached after following `next_cursor` CURSOR_PAGES times."""
        for _ in range(CURSOR_PAGES):
            _, body = self.get(path)
            cursor = json.loads(body)["meta"]["next_cursor"]
            path = f"/api/v1/books?per_page=20&cursor={quote(cursor)}"
        return path

    def close(self) -> None:
        self.conn.close()


def wrk(url: str, duration: float, script_args: list[str] | None = None) -> dict:
    common = {"connections": run.CONNECTIONS, "threads": run.WRK_THREADS}
    if script_args:
        spec = load.Load(url, script="book_by_id.lua", script_args=script_args, **common)
    else:
        spec = load.Load(url, **common)
    result = load.run([spec], duration)[0]
    return {"rps": result.requests_per_s, "wrk_p50_ms": result.p50_ms, "errors": result.errors}


def measure(bench: run.Bench, db: str, size: int, duration: float) -> dict:
    """Every shape at one size on one database; the catalog must be ready."""
    live, revision = scaledata.live_books(bench.urls[db])
    shelf = bench.server(run.Row("scale-bookshelf", "bookshelf", "list", "", db), 0).start()
    ref = bench.server(run.Row(run.BASELINE, "restful", "one", "", db), 0).start()
    results = {"live_books": live, "schema": revision, "shapes": {}}
    try:
        shelf.wait_ready()
        ref.wait_ready()
        watch = CpuWatch([shelf.proc.pid, ref.proc.pid], bench.pg_database(db))
        client = Client(shelf)
        one = f"{run.BOOK_PATH}{size - 1}"
        results["one book p50_ms"] = client.p50(one)[0]
        args = [run.BOOK_PATH, str(size), str(scaledata.DELETED_EVERY)]
        results["reference"] = wrk(ref.url, duration, args)
        log(f"{db} {size:,}: reference (c) {results['reference']['rps']:.0f} req/s")
        for name, path in shapes(live):
            if path == "cursor":
                path = client.deep_cursor("/api/v1/books?per_page=20")
            p50, n = client.p50(path)
            figures = {"path": path, "p50_ms": p50, "samples": n} | wrk(shelf.url + path, duration)
            results["shapes"][name] = figures
            log(f"{db} {size:,}: {name}: p50 {p50:.2f} ms ({n}), {figures['rps']:.0f} req/s")
        client.close()
        results |= watch.read()
    finally:
        shelf.stop()
        ref.stop()
    return results


def main() -> int:
    sizes, duration, pg = settings()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    install.ensure_wrk()
    bench = run.Bench(run.Settings.from_env())
    bench.urls = {"sqlite": dataset.sqlite_url(SQLITE_PATH), **({"postgresql": pg} if pg else {})}
    runs = []
    try:
        for size in sizes:
            for db in bench.urls:
                prepared = scaledata.prepare(
                    bench.urls[db],
                    size,
                    bench.bookshelf_env(db, free_port()),
                    run.ROOT,
                    run.LOGS / f"scale-init-{db}.log",
                )
                figures = measure(bench, db, size, duration)
                runs.append({"db": db, "size": size, "prepare_s": prepared, **figures})
                drop(bench.urls[db])
                report(runs, started, duration)  # what is measured so far
    finally:
        Server.stop_all()
        for url in bench.urls.values():
            drop(url)
    md_path = report(runs, started, duration)
    sys.stdout.write(md_path.read_text())
    log(f"written {md_path.relative_to(run.ROOT)} and .json in {time.monotonic() - started:.0f} s")
    return 0


def report(runs: list[dict], started: float, duration: float) -> Path:
    info = {
        "elapsed_s": round(time.monotonic() - started),
        "duration_s": duration,
        "commit": commit(),
    }
    return scalereport.write(run.RESULTS, info, runs)


def commit() -> str:
    """The checked-out commit, and whether the tree differs from it."""
    git = ["git", "-C", str(run.ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "bookshelf"], capture_output=True)
    return head.stdout.strip() + (" with local changes" if dirty.stdout.strip() else "")


def drop(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        scaledata.remove_sqlite(Path(parsed.database))
    else:
        scaledata.drop_pg(parsed)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; every server started was stopped")
        sys.exit(130)
