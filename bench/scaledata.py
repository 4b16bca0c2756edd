"""The scale benchmark's catalogs: the schema by the app's own migrations (`init-db`), then N
books made by the database itself in one INSERT ... SELECT (SQLite: a recursive CTE; PostgreSQL:
generate_series), then the planner's statistics gathered as a deployment would after a bulk
load (SQLite: ANALYZE; PostgreSQL: VACUUM ANALYZE).

Every value comes from the row number through two integer hashes, so a size is the same catalog
on both databases: titles "<adjective> <noun>[ of <place>]" (each noun in 1 title of 20; "of
the Dead" in 1 of 1,000), 1,000 authors, 20 genres, years 1800..2025 (1 in 20 NULL), an ISBN
unless id % 10 = 3, 100 owners, created_at 5 minutes apart, and every book whose id is a
multiple of 50 soft-deleted (2%)."""

import time
from pathlib import Path

import dataset
from dataset import _init_db, hasher
from progress import log
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

ADJECTIVES = [
    "Silent",
    "Crimson",
    "Hidden",
    "Broken",
    "Golden",
    "Last",
    "Lost",
    "Burning",
    "Frozen",
    "Quiet",
    "Wild",
    "Secret",
    "Iron",
    "Silver",
    "Hollow",
    "Bright",
    "Endless",
    "Forgotten",
    "Savage",
    "Gentle",
    "Distant",
    "Scarlet",
    "Ancient",
    "Restless",
    "Pale",
    "Bitter",
    "Velvet",
    "Little",
    "Northern",
    "Southern",
    "Winding",
    "Sleeping",
    "Falling",
    "Stolen",
    "Painted",
    "Glass",
    "Second",
    "Final",
    "Midnight",
    "Summer",
]
NOUNS = [
    "River",
    "Mountain",
    "Garden",
    "Empire",
    "Kingdom",
    "Shadow",
    "Winter",
    "Voyage",
    "Harbor",
    "Forest",
    "Tower",
    "Orchard",
    "Lantern",
    "Mirror",
    "Storm",
    "Crown",
    "Island",
    "Letter",
    "Journey",
    "Machine",
]
PLACES = [
    "Avalon",
    "Babel",
    "Carthage",
    "Eden",
    "Florence",
    "Granada",
    "Hollow",
    "Hill",
    "Istanbul",
    "Jericho",
    "Kyoto",
    "Lisbon",
    "Memphis",
    "Nineveh",
    "Oxford",
    "Prague",
    "Quebec",
    "Rome",
    "Samarkand",
    "Troy",
    "Ur",
    "Venice",
    "Warsaw",
    "Xanadu",
    "York",
    "Zion",
]
FIRST_NAMES = [
    "Ada",
    "Ben",
    "Clara",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Nils",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Uma",
    "Victor",
    "Wren",
    "Yusuf",
    "Zoe",
    "Alma",
    "Bruno",
    "Celia",
    "Dario",
    "Esme",
    "Felix",
    "Gina",
    "Hugo",
    "Iris",
    "Jude",
    "Kofi",
    "Lena",
    "Milo",
    "Nora",
    "Otto",
]
LAST_NAMES = [
    "Abbott",
    "Becker",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Gallo",
    "Haddad",
    "Ito",
    "Jansen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Quist",
    "Rossi",
    "Sato",
    "Tanaka",
    "Ueda",
    "Varga",
    "Weber",
    "Young",
    "Zhang",
]
GENRES = (
    "Science Fiction",
    "Fantasy",
    "Mystery",
    "Classic",
    "Romance",
    "History",
    "Poetry",
    "Thriller",
    "Horror",
    "Biography",
    "Travel",
    "Philosophy",
    "Drama",
    "Humor",
    "Crime",
    "Adventure",
    "Memoir",
    "Science",
    "Art",
    "Children",
)
N_USERS = 100
DELETED_EVERY = 50  # ids that are multiples of this are soft-deleted
Q_RARE = "dead"  # "of the Dead": 1 title in 1,000
Q_COMMON = "garden"  # the noun "Garden": 1 title in 20
Q_SHORT = "an"  # 2 characters: too short for a trigram index
AUTHOR = f"{FIRST_NAMES[7]} {LAST_NAMES[7]}"
GENRE = "Fantasy"
OWNER_ID = 42

# Pseudo-random but reproducible: h and g are integer hashes of the row number i.
_H = "((i * 2654435761) % 4294967296)"
_G = "((i * 1103515245 + 12345) % 2147483648)"
_DIALECT = {
    "sqlite": {
        "with": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) ",
        "from": "n",
        "ts": "datetime('2015-01-01', '+' || ({} * 300) || ' seconds') || '.000000'",
        "pad": "printf('%010d', {})",
    },
    "postgresql": {
        "with": "",
        "from": "generate_series(CAST(1 AS BIGINT), CAST(:n AS BIGINT)) AS n(i)",
        "ts": "(TIMESTAMP '2015-01-01' + {} * INTERVAL '300 seconds')",
        "pad": "lpad(CAST({} AS TEXT), 10, '0')",
    },
}


def _pick(words, index: str) -> str:
    """SQL for words[index % len(words)]: a slice of one padded literal (no join, no array)."""
    width = max(map(len, words))
    packed = "".join(word.ljust(width) for word in words)
    start = f"CAST(({index}) % {len(words)} * {width} + 1 AS INTEGER)"
    return f"rtrim(substr('{packed}', {start}, {width}))"


def books_insert(dialect: str) -> str:
    d = _DIALECT[dialect]
    place = (
        f"CASE WHEN (h / 5600) % 1000 = 0 THEN ' of the Dead' "
        f"WHEN (h / 5600) % 1000 < 300 THEN ' of ' || {_pick(PLACES, 'h / 5600')} ELSE '' END"
    )
    created = d["ts"].format("i")
    deleted = d["ts"].format("(i + 8640)")  # 30 days after it was created
    return (
        f"{d['with']}INSERT INTO books (id, title, author, genre, published_year, isbn, "
        "owner_id, change_seq, created_at, updated_at, deleted_at) "
        f"SELECT i, {_pick(ADJECTIVES, 'h / 7')} || ' ' || {_pick(NOUNS, 'h / 280')} || {place}, "
        f"{_pick(FIRST_NAMES, 'g / 11')} || ' ' || {_pick(LAST_NAMES, 'g / 440')}, "
        f"{_pick(GENRES, 'g / 11000')}, "
        "CASE WHEN i % 20 = 11 THEN NULL ELSE 1800 + (g / 220000) % 226 END, "
        f"CASE WHEN i % 10 = 3 THEN NULL ELSE '978' || {d['pad'].format('i')} END, "
        f"1 + (h / 5600000) % {N_USERS}, i, {created}, {created}, "
        f"CASE WHEN i % {DELETED_EVERY} = 0 THEN {deleted} ELSE NULL END "
        f"FROM (SELECT i, {_H} AS h, {_G} AS g FROM {d['from']}) AS x"
    )


def users_insert(dialect: str) -> str:
    d = _DIALECT[dialect]
    created = d["ts"].format("0")
    return (
        f"{d['with']}INSERT INTO users (id, name, email, password_hash, role, created_at, "
        f"updated_at, deleted_at) SELECT i, 'Reader ' || i, 'reader' || i || "
        f"'@bookshelf.invalid', :hash, 'user', {created}, {created}, NULL FROM {d['from']}"
    )


def prepare(url: str, size: int, app_env: dict, cwd: Path, log_path: Path) -> dict:
    """A fresh catalog of `size` books at `url`; the seconds each step took."""
    parsed = make_url(url)
    fresh(parsed)
    seconds = {}
    with _Timer(seconds, "init_db"):
        _init_db(app_env, cwd, log_path)
    engine = create_engine(url)
    dialect = engine.dialect.name
    try:
        with _Timer(seconds, "generate"), engine.begin() as conn:
            conn.execute(text(users_insert(dialect)), {"n": N_USERS, "hash": _password_hash()})
            conn.execute(text(books_insert(dialect)), {"n": size})
            conn.execute(text("DELETE FROM sync_clock"))
            conn.execute(
                text("INSERT INTO sync_clock (id, last_seq, pruned_through) VALUES (1, :n, 0)"),
                {"n": size},
            )
            if dialect == "postgresql":
                for table in ("users", "books"):
                    conn.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"),
                        {"n": N_USERS if table == "users" else size},
                    )
        with _Timer(seconds, "analyze"):
            analyze(engine)
    finally:
        engine.dispose()
    log(f"{dialect} {size:,} books: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return seconds


def analyze(engine) -> None:
    """What an operator runs after a bulk load, so the planner knows the table's shape."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def fresh(url: URL) -> None:
    """No database at `url` but an empty one (the SQLite file removed; PostgreSQL dropped and
    created)."""
    if url.get_backend_name() == "sqlite":
        remove_sqlite(Path(url.database))
        return
    drop_pg(url)
    dataset._create_pg_database(url)


def drop_pg(url: URL) -> None:
    if url.database == "test" or "scale" not in url.database:
        raise RuntimeError(f"refusing to drop the PostgreSQL database {url.database!r}")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def remove_sqlite(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def live_books(url: str) -> tuple[int, str]:
    """How many books are live, and the schema's migration revision."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            live = conn.scalar(text("SELECT count(*) FROM books WHERE deleted_at IS NULL"))
            return live, conn.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()


def _password_hash() -> str:
    return hasher().hash(dataset.PASSWORD)


class _Timer:
    def __init__(self, into: dict, name: str):
        self.into, self.name = into, name

    def __enter__(self):
        self.started = time.monotonic()

    def __exit__(self, *exc):
        self.into[self.name] = time.monotonic() - self.started
