"""Bookshelf side-by-side benchmark: `python bench/run.py` (the project venv's python).

Installs what it needs (wrk; FastAPI and uvicorn into bench/.venv), builds the data, then for
each row starts the server(s) on free 127.0.0.1 ports, drives them with wrk (a warm-up, then
rounds; medians), reads their memory, stops them, and finally prints one table and writes it to
bench/results/latest.md and latest.json. Reference (c), the ratios' baseline, runs beside every
row and takes turns with it, round by round: each ratio compares rounds a few seconds apart.
The scale-out rows (PostgreSQL only) take turns the same way: the shipped deploy/nginx.conf in
front of one process and of two, and the one process without nginx. On PostgreSQL, every row
also counts the connections opened during its rounds (pg_stat_database.sessions).

Knobs (environment):
  BENCH_DURATION      seconds per measured round (default 10)
  BENCH_ROUNDS        measured rounds per row (default 3)
  BENCH_WARMUP        seconds of warm-up per row, not measured (default 3)
  BENCH_ONLY          comma-separated row names, e.g. "ref-restful-sqla,book-get"
                      (a name selects its PostgreSQL variant too; "book-get@pg" only that one;
                      "scale-2proc-nginx" the three scale-out rows, which need nginx)
  BENCH_DATABASE_URL  also run the Bookshelf rows on this PostgreSQL database (it is wiped;
                      its name must contain "bench"), e.g.
                      postgresql+psycopg://postgres@127.0.0.1:5432/bookshelf_bench
"""

import json
import os
import platform
import secrets
import signal
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import dataset
import install
import load
import proxy
import report
from machine import CpuWatch
from pgstat import Sessions
from progress import log
from proxy import Nginx
from servers import Server, clean_env, free_port
from sqlalchemy import make_url
from turns import Setup, pair, summary, take_turn

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
REFS = BENCH / "refs"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"

CONNECTIONS = 32
WRK_THREADS = 2
LOGIN_CONNECTIONS = 4
SERVER_THREADS = 4
UNLIMITED = "1000000 per minute"
BASELINE = "ref-restful-sqla"  # reference (c): every ratio is taken against it
PROBE_TIMEOUT_S = 15

# An HTTP client that never goes through a proxy: only 127.0.0.1 is ever spoken to.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    duration: float
    rounds: int
    warmup: float
    only: frozenset[str]
    pg_url: str | None

    @classmethod
    def from_env(cls) -> "Settings":
        def number(name, default, low, high, kind=float):
            raw = os.environ.get(name, "").strip() or str(default)
            try:
                value = kind(raw)
            except ValueError:
                sys.exit(f"bench: {name} must be a number, got {raw!r}")
            if not low <= value <= high:
                sys.exit(f"bench: {name} must be between {low} and {high}, got {raw!r}")
            return value

        only = os.environ.get("BENCH_ONLY", "")
        return cls(
            duration=number("BENCH_DURATION", 10, 1, 600),
            rounds=number("BENCH_ROUNDS", 3, 1, 20, int),
            warmup=number("BENCH_WARMUP", 3, 0, 120),
            only=frozenset(name.strip() for name in only.split(",") if name.strip()),
            pg_url=os.environ.get("BENCH_DATABASE_URL", "").strip() or None,
        )


# --- what is measured ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    server: str  # wsgi | flask | restful | fastapi | bookshelf | argon2
    request: str  # one | list | search | create | me | login | hash
    what: str
    db: str = "sqlite"  # sqlite | postgresql | - (no database)
    connections: int = CONNECTIONS
    processes: int = 1
    threads: int = 1  # argon2 only
    proxy: bool = False  # behind nginx running deploy/nginx.conf
    env: tuple[tuple[str, str], ...] = ()  # settings of the row's own (Bookshelf rows)
    # Set-ups measured in turns with the row, on its processes (the first `processes` of them),
    # each reported as a row of its own; `versus` names the one its "x 1 proc" is taken against.
    partners: tuple["Row", ...] = ()
    versus: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}@pg" if self.db == "postgresql" else self.name

    def selected(self, only: frozenset[str]) -> bool:
        names = {name for row in (self, *self.partners) for name in (row.name, row.label)}
        return not only or bool(names & only)


BOOK_PATH = "/api/v1/books/"
REQUESTS = {
    # name: (method, path, body, needs a token, expected status)
    "one": ("GET", f"{BOOK_PATH}1", None, False, 200),
    "list": ("GET", "/api/v1/books?per_page=20", None, False, 200),
    "search": (
        "GET",
        f"/api/v1/books?author={dataset.SEARCH_AUTHOR.replace(' ', '%20')}&sort=-published_year",
        None,
        False,
        200,
    ),
    "create": ("POST", "/api/v1/books", {"title": "Probe", "author": "Bench Author"}, True, 201),
    "me": ("GET", "/api/v1/auth/me", None, True, 200),
    "login": (
        "POST",
        "/api/v1/auth/login",
        {"email": dataset.EMAIL, "password": dataset.PASSWORD},
        False,
        200,
    ),
}


def bookshelf_rows(db: str) -> list[Row]:
    one = f"GET {BOOK_PATH}{{id}}, a random id in 1..{dataset.N_BOOKS} per request"
    return [
        Row("book-get", "bookshelf", "one", f"Bookshelf: {one}.", db),
        Row(
            "book-get-metrics",
            "bookshelf",
            "one",
            f"Bookshelf: {one}, with metrics on (METRICS_TOKEN set: every request counted and "
            "timed by prometheus-client; goal: 1.2x the baseline or more).",
            db,
            env=(("METRICS_TOKEN", "bench-metrics-token-0123456789abcdef"),),
        ),
        Row("books-list", "bookshelf", "list", "Bookshelf: GET /api/v1/books?per_page=20.", db),
        Row(
            "books-search",
            "bookshelf",
            "search",
            f"Bookshelf: GET /api/v1/books?author={dataset.SEARCH_AUTHOR}&sort=-published_year "
            "(50 matches, first page of 20).",
            db,
        ),
        Row(
            "book-create",
            "bookshelf",
            "create",
            "Bookshelf: POST /api/v1/books with a bearer token, a unique title per request "
            "(bench/wrk/create_book.lua); 201 expected.",
            db,
        ),
        Row(
            "auth-me", "bookshelf", "me", "Bookshelf: GET /api/v1/auth/me with a bearer token.", db
        ),
        Row(
            "auth-login",
            "bookshelf",
            "login",
            "Bookshelf: POST /api/v1/auth/login (argon2id verify; successful logins, each writes "
            f"a refresh token row), {LOGIN_CONNECTIONS} connections.",
            db,
            connections=LOGIN_CONNECTIONS,
        ),
        Row(
            "book-get-2proc",
            "bookshelf",
            "one",
            f"Bookshelf: {one}, on 2 `python wsgi.py` processes ({SERVER_THREADS} threads each) "
            "on 2 ports, loaded by 2 concurrent wrk instances of 16 connections and 1 thread "
            "each; req/s is the sum of the two, p50/p99 the worse of the two, RSS the sum.",
            db,
            processes=2,
        ),
    ]


def scale_out_row(db: str) -> Row:
    """Issue 13's scale-out: the shipped nginx in front of two processes, in turns with the
    same nginx in front of the first of them alone, and with that process without nginx."""
    one = f"GET {BOOK_PATH}{{id}}, a random id in 1..{dataset.N_BOOKS} per request"
    nginx = "through nginx running deploy/nginx.conf (one wrk)"
    direct = Row(
        "scale-1proc-direct",
        "bookshelf",
        "one",
        f"Bookshelf: {one}, straight to the first process of scale-2proc-nginx (no nginx), "
        "in turns with it: what nginx costs.",
        db,
    )
    single = Row(
        "scale-1proc-nginx",
        "bookshelf",
        "one",
        f"Bookshelf: {one}, {nginx}, the first process of scale-2proc-nginx its only upstream, "
        "in turns with it.",
        db,
        proxy=True,
    )
    return Row(
        "scale-2proc-nginx",
        "bookshelf",
        "one",
        f"Bookshelf: {one}, {nginx} in front of 2 `python wsgi.py` processes "
        f"({SERVER_THREADS} threads each, TRUSTED_PROXIES=1); x 1 proc: over "
        "scale-1proc-nginx, the median of the rounds' ratios (goal: 1.7x or more).",
        db,
        processes=2,
        proxy=True,
        partners=(direct, single),
        versus=single.name,
    )


def all_rows(settings: Settings) -> list[Row]:
    one = f"GET {BOOK_PATH}{{id}}, a random id in 1..{dataset.N_BOOKS}"
    refs = [
        Row(
            "ref-wsgi",
            "wsgi",
            "one",
            f"reference (a): a raw WSGI callable on waitress ({SERVER_THREADS} threads) returning "
            "a fixed 78-byte JSON body (bench/refs/wsgi_raw.py).",
            "-",
        ),
        Row(
            "ref-flask",
            "flask",
            "one",
            f"reference (b): plain Flask on waitress ({SERVER_THREADS} threads) returning a book "
            "dict from memory (bench/refs/flask_plain.py).",
            "-",
        ),
    ]
    db_refs = [
        (
            "ref-restful-sqla",
            "restful",
            f"reference (c), the ratio baseline: bare Flask-RESTful + Flask-SQLAlchemy resource, "
            f"{one}, db.session.get(Book, id) returned as a dict, on waitress "
            f"({SERVER_THREADS} threads) (bench/refs/restful_sqla.py).",
        ),
        (
            "ref-fastapi",
            "fastapi",
            "reference (d): the same read in FastAPI + SQLAlchemy (sync endpoint, FastAPI's "
            "thread pool) on uvicorn[standard], one process (bench/refs/fastapi_sqla.py).",
        ),
    ]
    argon2 = [
        Row(
            f"argon2-hash-{n}t",
            "argon2",
            "hash",
            f"argon2.PasswordHasher.hash alone with the production parameters, {n} thread(s) in "
            "one process, no server; req/s column = hashes/s (compare auth-login).",
            "-",
            connections=0,
            threads=n,
        )
        for n in (1, SERVER_THREADS)
    ]
    rows = refs + [Row(n, s, "one", w, "sqlite") for n, s, w in db_refs]
    shelf = bookshelf_rows("sqlite")
    rows += shelf[:7] + argon2 + shelf[7:]
    if settings.pg_url:
        rows += [Row(n, s, "one", w, "postgresql") for n, s, w in db_refs]
        rows += bookshelf_rows("postgresql")
        rows.append(scale_out_row("postgresql"))
    return [row for row in rows if row.selected(settings.only)]


# --- the run -------------------------------------------------------------------------------


class Bench:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.secret = secrets.token_urlsafe(48)  # 64 bytes
        self.tag = secrets.token_hex(4)  # keeps titles unique across runs
        self.urls = {"sqlite": dataset.sqlite_url(RESULTS / "bench.db"), "-": None}
        if settings.pg_url:
            self.urls["postgresql"] = settings.pg_url
        self.prepared: dict[str, str | None] = {}  # db -> None when ready, else the error
        self.fastapi_python: Path | None = None
        self.fastapi_skip = ""

    # environment and commands of each kind of server

    def bookshelf_env(self, db: str, port: int) -> dict:
        row_seconds = self.settings.warmup + self.settings.rounds * self.settings.duration
        return clean_env(
            APP_ENV="production",
            SECRET_KEY=self.secret,
            ALLOWED_HOSTS="127.0.0.1",
            DATABASE_URL=self.urls[db],
            LOG_LEVEL="INFO",
            HOST="127.0.0.1",
            PORT=str(port),
            WAITRESS_THREADS=str(SERVER_THREADS),
            RATELIMIT_STORAGE_URI="memory://",
            RATELIMIT_DEFAULT=UNLIMITED,
            LOGIN_FAILURE_LIMIT=UNLIMITED,
            LOGIN_FAILURE_LIMIT_PER_EMAIL=UNLIMITED,
            # The token fetched before a row must outlive the row (default: 15 minutes).
            ACCESS_TOKEN_TTL=str(max(900, int(row_seconds) + 600)),
        )

    def server(self, row: Row, index: int) -> Server:
        port = free_port()
        name = f"{row.label}-{index}" if row.processes > 1 else row.label
        if row.server == "bookshelf":
            argv, env = [sys.executable, str(ROOT / "wsgi.py")], self.bookshelf_env(row.db, port)
            if row.proxy:  # as deployed behind nginx (docker-compose.yml)
                env["TRUSTED_PROXIES"] = "1"
            env.update(row.env)
        else:
            script = {
                "wsgi": "wsgi_raw.py",
                "flask": "flask_plain.py",
                "restful": "restful_sqla.py",
                "fastapi": "fastapi_sqla.py",
            }[row.server]
            python = self.fastapi_python if row.server == "fastapi" else Path(sys.executable)
            env = clean_env(PORT=str(port), WAITRESS_THREADS=str(SERVER_THREADS))
            if row.db != "-":
                env["DATABASE_URL"] = self.urls[row.db]
            argv = [str(python), str(REFS / script)]
        return Server(name, argv, env, ROOT, LOGS)

    # preparation, once per database and once for FastAPI

    def prepare_db(self, db: str) -> str | None:
        if db == "-" or db in self.prepared:
            return self.prepared.get(db)
        log(f"preparing the {db} database: init-db, {dataset.N_BOOKS:,} books")
        started = time.monotonic()
        try:
            LOGS.mkdir(parents=True, exist_ok=True)
            dataset.prepare(
                self.urls[db], self.bookshelf_env(db, 0), ROOT, LOGS / f"init-db-{db}.log"
            )
            self.prepared[db] = None
            log(f"{db} database ready in {time.monotonic() - started:.1f} s")
        except Exception as exc:
            self.prepared[db] = f"could not prepare the database: {exc}"
            log(self.prepared[db])
        return self.prepared[db]

    def baseline_for(self, row: Row) -> Row | None:
        """Reference (c) on the row's database, measured in turns with the row (None for the
        reference itself and for argon2)."""
        if row.name == BASELINE or row.server == "argon2":
            return None
        return Row(
            BASELINE, "restful", "one", "reference (c)", "sqlite" if row.db == "-" else row.db
        )

    def pg_database(self, db: str) -> str | None:
        return make_url(self.urls[db]).database if db == "postgresql" else None

    def prepare_fastapi(self) -> str:
        if self.fastapi_python is None and not self.fastapi_skip:
            self.fastapi_python, self.fastapi_skip = install.ensure_fastapi_venv()
        return self.fastapi_skip

    # one row

    def measure(self, row: Row) -> list[dict]:
        """The row, and its partners, in turns with reference (c): a result for each."""
        results = [
            {
                "label": member.label,
                "name": member.name,
                "db": member.db,
                "what": member.what,
                "connections": member.connections or None,
                "status": "ok",
            }
            for member in (*row.partners, row)
        ]
        status, why = self.unready(row)
        if status:
            return [result | {"status": status, "reason": why} for result in results]
        if row.server == "argon2":
            return [results[0] | self.measure_argon2(row)]
        if row.db != "-":
            dataset.reset(self.urls[row.db])
        base, setups = self.setups(row)
        # The processes first, then the nginx in front of them.
        everything = list(dict.fromkeys(s for x in setups for s in (*x.servers, *x.targets)))
        everything.sort(key=lambda server: isinstance(server, Nginx))
        try:
            measured = self.take_turns(row, base, setups, everything)
        except Exception as exc:
            log(f"{row.label}: FAILED: {exc}")
            return [
                result | {"status": "failed", "reason": str(exc).splitlines()[0]}
                for result in results
            ]
        finally:
            for server in everything:
                server.stop()
        return [result | figures for result, figures in zip(results, measured, strict=True)]

    def unready(self, row: Row) -> tuple[str, str]:
        """("skipped" or "failed", why) when the row cannot be measured, else ("", "")."""
        if row.server == "fastapi" and (why := self.prepare_fastapi()):
            return "skipped", why
        if any(m.proxy for m in (row, *row.partners)) and (why := proxy.unavailable()):
            return "skipped", why
        if why := self.prepare_db(row.db):
            return "failed", why
        baseline = self.baseline_for(row)
        if baseline and (why := self.prepare_db(baseline.db)):
            return "failed", why
        return "", ""

    def setups(self, row: Row) -> tuple[Setup | None, list[Setup]]:
        """Reference (c)'s set-up (None for itself), and every set-up in turn order: reference
        (c)'s, the partners', the row's. The row's processes serve its partners too."""
        baseline = self.baseline_for(row)
        setups = []
        if baseline:
            server = self.server(baseline, 0)
            setups.append(Setup(baseline.label, "one", CONNECTIONS, [server], [server]))
        group = [*row.partners, row]
        processes = [self.server(row, i) for i in range(max(m.processes for m in group))]
        by_name = {}
        for member in group:
            servers = processes[: member.processes]
            targets = [Nginx(f"{member.label}-nginx", servers, LOGS)] if member.proxy else servers
            setup = Setup(member.label, member.request, member.connections, servers, targets)
            setups.append(by_name.setdefault(member.name, setup))
        for member in group:
            if member.versus:
                by_name[member.name].versus = by_name[member.versus]
        return (setups[0] if baseline else None), setups

    def take_turns(
        self, row: Row, base: Setup | None, setups: list[Setup], everything: list[Server]
    ) -> list[dict]:
        """Starts everything, warms each set-up up, then the rounds: each set-up's turn in each.
        The figures of each set-up but reference (c)."""
        for server in everything:
            log(f"{row.label}: starting {server.name} on {server.url}")
            server.start()
        for server in everything:
            server.wait_ready()
        processes = list(dict.fromkeys(s for setup in setups for s in setup.servers))
        idle = {server: server.rss_kib() for server in processes}
        token = self.login(setups[-1].servers[0]) if REQUESTS[row.request][3] else None
        for setup in setups:
            for target in setup.targets:
                self.probe(target, setup.request, token)
            setup.loads = self.loads(setup, token)
        self.warm_up(row, setups)
        watch = CpuWatch([p for s in everything for p in s.pids()], self.pg_database(row.db))
        sessions = self.sessions(row.db)
        try:
            for n in range(1, self.settings.rounds + 1):
                for setup in setups:
                    turn = take_turn(setup, self.settings.duration, sessions)
                    if setup is not base:
                        self.log_turn(setup, turn, pair(setup, base), n)
        finally:
            if sessions:
                sessions.close()
        cpu = watch.read()
        after = {server: server.rss_kib() for server in processes}
        for server in everything:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} died under load:\n{server.stderr_tail()}")
        return [summary(setup, base, idle, after) | cpu for setup in setups if setup is not base]

    def warm_up(self, row: Row, setups: list[Setup]) -> None:
        if not self.settings.warmup:
            return
        each = f" for each of {len(setups)} set-ups" if len(setups) > 2 else ""
        log(f"{row.label}: warm-up {self.settings.warmup:g} s{each}")
        for setup in setups:
            if errors := sum(w.errors for w in load.run(setup.loads, self.settings.warmup)):
                log(f"{setup.label}: {errors} errors during the warm-up")

    def sessions(self, db: str) -> Sessions | None:
        """The counter of sessions opened on the PostgreSQL database (None on SQLite)."""
        if db != "postgresql":
            return None
        sessions = Sessions(self.urls[db])
        if why := sessions.open():
            log(f"no count of new connections: {why}")
            return None
        return sessions

    def log_turn(self, setup: Setup, turn: dict, paired: str, n: int) -> None:
        opened = f", {turn['new_connections']} new connections" if "seconds" in turn else ""
        log(
            f"{setup.label}: round {n}/{self.settings.rounds}: "
            f"{turn['requests_per_s']:.0f} req/s{paired}, p50 {turn['p50_ms']:.2f} ms, "
            f"p99 {turn['p99_ms']:.2f} ms, errors {turn['non_2xx_3xx']}+{turn['socket_errors']}"
            f"{opened}"
        )

    def loads(self, setup: Setup, token: str | None) -> list[load.Load]:
        """One wrk per target (a process, or nginx), the connections and threads shared out."""
        connections = setup.connections // len(setup.targets)
        threads = max(1, WRK_THREADS // len(setup.targets))
        method, path, _, _, _ = REQUESTS[setup.request]
        loads = []
        for server in setup.targets:
            common = {"connections": connections, "threads": threads}
            if setup.request == "one":
                args = [BOOK_PATH, str(dataset.N_BOOKS)]
                loads.append(
                    load.Load(server.url, script="book_by_id.lua", script_args=args, **common)
                )
            elif setup.request == "create":
                args = [token, self.tag]
                loads.append(
                    load.Load(
                        server.url + path, script="create_book.lua", script_args=args, **common
                    )
                )
            elif setup.request == "login":
                args = [dataset.EMAIL, dataset.PASSWORD]
                loads.append(
                    load.Load(server.url + path, script="login.lua", script_args=args, **common)
                )
            elif setup.request == "me":
                headers = [f"Authorization: Bearer {token}"]
                loads.append(load.Load(server.url + path, headers=headers, **common))
            else:
                loads.append(load.Load(server.url + path, **common))
        return loads

    def measure_argon2(self, row: Row) -> dict:
        seconds = min(self.settings.duration, 5.0)
        rates = []
        watch = CpuWatch([])
        for n in range(1, self.settings.rounds + 1):
            rates.append(argon2_rate(row.threads, seconds))
            log(f"{row.label}: round {n}/{self.settings.rounds}: {rates[-1]:.1f} hashes/s")
        return {
            "requests_per_s": statistics.median(rates),
            "rounds": rates,
            "seconds": seconds,
            **watch.read(),
        }

    # HTTP helpers (127.0.0.1 only)

    def login(self, server: Server) -> str:
        status, body = http(server, "POST", "/api/v1/auth/login", REQUESTS["login"][2])
        if status != 200:
            raise RuntimeError(f"login answered {status}: {body[:200]!r}")
        return json.loads(body)["data"]["access_token"]

    def probe(self, server: Server, request: str, token: str | None) -> None:
        """One request as the row will send them, before any load: it must succeed."""
        method, path, body, _, expected = REQUESTS[request]
        status, answer = http(server, method, path, body, token)
        if status != expected:
            raise RuntimeError(
                f"{method} {path} answered {status}, not {expected}: {answer[:300]!r}"
            )


def http(server: Server, method: str, path: str, body=None, token=None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data, headers, method=method)
    try:
        with _http.open(request, timeout=PROBE_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def argon2_rate(threads: int, seconds: float) -> float:
    """Hashes per second over `seconds`, `threads` threads hashing at once (the argon2 C code
    runs without the GIL)."""
    hasher = dataset.hasher()
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def work(i):
        while time.monotonic() < deadline:
            hasher.hash("correct horse battery staple")
            counts[i] += 1

    started = time.monotonic()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - started)


def add_ratios(rows: list[dict]) -> None:
    """Reference (c) itself is 1.00; every other row brought its paired ratio (`measure`)."""
    for row in rows:
        if row["status"] == "ok" and row["name"] == BASELINE:
            row["ratio"] = 1.0


def meta(settings: Settings, started: float, fastapi: str) -> dict:
    from bookshelf.config import Config

    pg = ""
    if settings.pg_url:
        pg = f"; PostgreSQL: {settings.pg_url.split('@')[-1]}"
    return {
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}",
        "wrk": install.wrk_version(),
        "versions": ", ".join(
            f"{package} {version(package)}"
            for package in ("Flask", "Flask-RESTful", "Flask-SQLAlchemy", "SQLAlchemy", "waitress")
        )
        + (f", {fastapi}" if fastapi else ""),
        "settings": {
            "duration_s": settings.duration,
            "rounds": settings.rounds,
            "warmup_s": settings.warmup,
            "only": sorted(settings.only),
            "database": "SQLite (bench/results/bench.db)" + pg,
        },
        "method": (
            f"{WRK_THREADS} threads, {CONNECTIONS} connections ({LOGIN_CONNECTIONS} for "
            f"auth-login), --latency --timeout {load.WRK_TIMEOUT}; per row a "
            f"{settings.warmup:g} s warm-up, then "
            f"{settings.rounds} rounds of {settings.duration:g} s; the table shows the medians of "
            "the rounds; errors are summed over the rounds."
        ),
        "notes": [
            "Every server runs on this same machine as wrk, on 127.0.0.1; wrk's two threads "
            f"compete with the server for the {os.cpu_count()} CPUs.",
            f"Data: {dataset.N_BOOKS:,} books by {dataset.N_AUTHORS} authors and one user, created "
            "by `flask --app wsgi init-db` and a bulk insert; the reference apps read the same "
            "database; before each Bookshelf row the rows written by the previous one are "
            "deleted.",
            "Bookshelf: `python wsgi.py` with APP_ENV=production, a 64-byte SECRET_KEY, "
            f"LOG_LEVEL=INFO with stdout to /dev/null, WAITRESS_THREADS={SERVER_THREADS}, "
            f"RATELIMIT_DEFAULT, LOGIN_FAILURE_LIMIT and LOGIN_FAILURE_LIMIT_PER_EMAIL = "
            f"'{UNLIMITED}' (memory storage), ACCESS_TOKEN_TTL long enough for the row.",
            "other CPU: CPU time used by every other process on the machine during the measured "
            "rounds (the row's, its partners' and reference (c)'s), in cores (/proc/stat less "
            "the servers', nginx's, wrk's and the benchmark database's "
            "PostgreSQL backends' own time); above ~0.1 the row shared the CPUs with other work "
            "and its numbers are low. Even on a quiet machine, runs differ by up to ~25% on a "
            "small VM: compare the rows of one run (the ratios), not numbers across runs.",
            "RSS: VmRSS of the server process(es) from /proc/PID/status, idle = after it listens "
            "and before any request, load = after the last round.",
            "x ref (c): paired rounds. Reference (c) runs beside each row on the same database "
            "(SQLite for rows without one); every round of the row follows a round of reference "
            "(c) of the same length, and the column is the median over the rounds of row req/s "
            "over the reference's in the round just before (before the row's partners, if it "
            "has any). Drift of the machine between rows "
            "(seen: the reference alone from 580 to 1,060 req/s in one day) cancels out; req/s "
            "is the row's own median.",
            "Scale-out (scale-*@pg, issue 13): one measurement of four set-ups taking turns in "
            "every round: reference (c), scale-1proc-direct, scale-1proc-nginx, "
            "scale-2proc-nginx. Two `python wsgi.py` processes (TRUSTED_PROXIES=1, as in "
            "docker-compose.yml) serve all three rows: the first alone straight, the first "
            "alone behind nginx, both behind nginx; nginx runs deploy/nginx.conf as shipped "
            "(worker_processes auto) but for the upstream's server lines and the listen port "
            "(tests/nginx.py's substituted(); the files run are in bench/results/logs/), its "
            "access log to /dev/null. One wrk (2 threads, 32 connections) per set-up. x 1 proc: "
            "the median over the rounds of scale-2proc-nginx's req/s over scale-1proc-nginx's "
            f"in the same round; goal {report.SCALE_GOAL}x or more. nginx, wrk, PostgreSQL and "
            f"the processes share the {os.cpu_count()} CPUs: the ratio says what this machine "
            "gives, not what two processes give where each has a core.",
            "new conn/s: sessions established to the benchmark database (pg_stat_database."
            "sessions, PostgreSQL 14+) during the row's own measured rounds, over their length; "
            "read on a connection of the benchmark's own, opened before the rounds. Bookshelf "
            "runs with its default pool (DATABASE_POOL_SIZE unset: WAITRESS_THREADS + 2, no "
            "overflow); the goal under steady load is 0/s.",
            "book-get-2proc: waitress has no SO_REUSEPORT, so two processes listen on two "
            "ports and two wrk instances (16 connections, 1 thread each) run at once; req/s is "
            "their sum, p50/p99 the worse of the two per round.",
            "argon2: PasswordHasher(time_cost="
            f"{Config.PASSWORD_HASH_TIME_COST}, memory_cost={Config.PASSWORD_HASH_MEMORY_KIB}, "
            f"parallelism={Config.PASSWORD_HASH_PARALLELISM}) (bookshelf.config.Config), "
            f"rounds of {min(settings.duration, 5.0):g} s.",
        ],
    }


def main() -> int:
    settings = Settings.from_env()
    started = time.monotonic()
    # SIGTERM ends the run like Ctrl-C: through the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    install.ensure_wrk()
    rows = all_rows(settings)
    if not rows:
        sys.exit(f"bench: BENCH_ONLY={','.join(sorted(settings.only))} selects no row")
    bench = Bench(settings)
    results = []
    try:
        for i, row in enumerate(rows, 1):
            log(f"[{i}/{len(rows)}] {row.label}")
            results += bench.measure(row)
    finally:
        Server.stop_all()
    add_ratios(results)
    fastapi = install.fastapi_versions(bench.fastapi_python) if bench.fastapi_python else ""
    info = meta(settings, started, fastapi)
    md_path, json_path = report.write(RESULTS, info, results)
    missing = report.notes([r for r in results if r["status"] != "ok"])
    lines = [report.markdown_table(results), "", *report.goals(results), ""]
    lines += [*missing, *([""] if missing else [])]
    lines += [
        f"wrk: {info['method']}",
        f"written: {md_path.relative_to(ROOT)}, {json_path.relative_to(ROOT)} "
        f"(the run took {info['elapsed_s']:.0f} s)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    bad = [
        r["label"]
        for r in results
        if r["status"] == "failed" or r.get("non_2xx_3xx") or r.get("socket_errors")
    ]
    if bad:
        log(f"rows with errors or failures: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; every server started was stopped")
        sys.exit(130)
