"""The benchmark's data: the Bookshelf schema (through `flask --app wsgi init-db`) holding one
user and 10,000 books, on SQLite (a file under bench/results/) or on PostgreSQL
(BENCH_DATABASE_URL). The reference apps read the same database."""

import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from progress import log
from sqlalchemy import MetaData, create_engine, insert, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SAWarning

from bookshelf.config import Config

N_BOOKS = 10_000
N_AUTHORS = 200  # so an author filter finds 50 books
EMAIL = "bench@bookshelf.invalid"
PASSWORD = "bench-password-0123456789"  # a throwaway account in a throwaway database
SEARCH_AUTHOR = "Author 007"
GENRES = ("Science Fiction", "Fantasy", "Mystery", "Classic", "Romance", "History", "Poetry")
# Written by the benchmark rows; emptied before each row so that every row sees the same data.
SCRATCH_TABLES = ("idempotency_keys", "refresh_tokens", "revoked_access_tokens")
APP_TABLES = (*SCRATCH_TABLES, "books", "users")
INIT_DB_TIMEOUT_S = 300


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def hasher() -> PasswordHasher:
    """argon2id with the app's production parameters."""
    return PasswordHasher(
        time_cost=Config.PASSWORD_HASH_TIME_COST,
        memory_cost=Config.PASSWORD_HASH_MEMORY_KIB,
        parallelism=Config.PASSWORD_HASH_PARALLELISM,
    )


def prepare(url: str, app_env: dict, cwd: Path, log_path: Path) -> None:
    """A fresh copy of the data at `url`: the schema brought up to date, then the rows replaced."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif parsed.get_backend_name() == "postgresql":
        if "bench" not in (parsed.database or ""):
            raise RuntimeError(
                f"BENCH_DATABASE_URL names the database {parsed.database!r}, which the benchmark "
                "would wipe: use one whose name contains 'bench' (e.g. bookshelf_bench)"
            )
        _create_pg_database(parsed)
    else:
        raise RuntimeError(f"unsupported database {parsed.get_backend_name()!r}")
    _init_db(app_env, cwd, log_path)
    _seed(url)


def reset(url: str) -> None:
    """Remove what a row wrote (tokens, idempotency keys, the books it created)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in SCRATCH_TABLES:
                conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text("DELETE FROM books WHERE id > :n"), {"n": N_BOOKS})
    finally:
        engine.dispose()


def _create_pg_database(url: URL) -> None:
    """`createdb` when missing, through the server's maintenance database."""
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                log(f"creating database {url.database}")
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()


def _init_db(app_env: dict, cwd: Path, log_path: Path) -> None:
    """The app's own migrations, as an operator would run them."""
    with open(log_path, "ab") as log:
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"],
            cwd=cwd,
            env=app_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            timeout=INIT_DB_TIMEOUT_S,
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
        raise RuntimeError(f"flask --app wsgi init-db failed ({done.returncode}):\n{tail}")


def _seed(url: str) -> None:
    engine = create_engine(url)
    try:
        meta = MetaData()
        with warnings.catch_warnings():  # the lower(...) expression indexes are not reflected
            warnings.simplefilter("ignore", SAWarning)
            meta.reflect(engine, only=APP_TABLES)
        now = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as the app stores it
        user = {
            "id": 1,
            "name": "Bench",
            "email": EMAIL,
            "password_hash": hasher().hash(PASSWORD),
            "role": "user",
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
        }
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"TRUNCATE {', '.join(APP_TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in APP_TABLES:
                    conn.execute(meta.tables[table].delete())
            conn.execute(insert(meta.tables["users"]), [user])
            conn.execute(
                insert(meta.tables["books"]), [_book(i, now) for i in range(1, N_BOOKS + 1)]
            )
            if engine.dialect.name == "postgresql":
                for table in ("users", "books"):  # explicit ids: move the sequences past them
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def _book(i: int, now: datetime) -> dict:
    return {
        "id": i,
        "title": f"Book {i:05d}",
        "author": f"Author {i % N_AUTHORS:03d}",
        "genre": GENRES[i % len(GENRES)],
        "published_year": 1800 + (i * 37) % 225,
        "isbn": _isbn13(978_000_000_000 + i),
        "owner_id": 1,
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
    }


def _isbn13(first12: int) -> str:
    digits = str(first12)
    total = sum(int(d) * (3 if k % 2 else 1) for k, d in enumerate(digits))
    return digits + str((10 - total % 10) % 10)
