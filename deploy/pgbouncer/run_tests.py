"""`make test-pgbouncer`: the whole test suite through a real PgBouncer running the shipped
deploy/pgbouncer/pgbouncer.ini, in front of the PostgreSQL on 127.0.0.1:5432 (trust auth).

The file runs as it ships but for three values, each of which must occur in it exactly once:
the listening address (127.0.0.1 and a free port); the [databases] line, which forwards
`bookshelf_pgbouncer` (created afresh) to 127.0.0.1:5432, followed by a `*` line that forwards
any other name too (the databases the tests create for themselves); and `auth_file`, a user
list of this run's own: `postgres` with a random password, as a SCRAM secret. The database has
the statement_timeout the README gives the API's role. pytest runs with TEST_DATABASE_URL
through PgBouncer and DATABASE_PGBOUNCER=1, and is given this script's arguments
(`make test-pgbouncer ARGS="-x tests/test_cli.py"`). Exits with pytest's status.

Without arguments, the suite leaves out the modules in NOT_THROUGH_PGBOUNCER: they test how the
server, nginx, the document and the package behave, which does not depend on how the database is
reached, and the PostgreSQL run tests them against the same database. Every test of the rules,
the database and the processes runs.
"""

import base64
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini"
sys.path.insert(0, str(ROOT))
from tests.processes import free_port, wait_for_port  # noqa: E402

POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DATABASE = "bookshelf_pgbouncer"  # the tests' own databases are named DATABASE_<hex>
USER = "postgres"
SERVER_STATEMENT_TIMEOUT = "1750ms"  # 0.25 s under the default DATABASE_STATEMENT_TIMEOUT
SUITE_TIMEOUT_S = 30 * 60  # the suite takes a few minutes; a hang must not hold CI for ever
SBIN = ["/usr/sbin", "/usr/local/sbin"]
NOT_THROUGH_PGBOUNCER = (
    "test_compose.py",  # the Compose file, with no database
    "test_config.py",
    "test_docs_browser.py",  # Swagger UI in Chromium
    "test_fuzz.py",  # conformance of answers to the document (1 minute)
    "test_generated_client.py",
    "test_kubernetes.py",
    "test_nginx.py",  # nginx's own answers and limits
    "test_nginx_replicas.py",  # rolling restarts behind nginx (2 minutes)
    "test_openapi.py",
    "test_packaging.py",
    "test_passwords.py",
    "test_procfile.py",
    "test_prometheus.py",
    "test_serving.py",  # waitress: connections, bodies, signals
)
PLACEHOLDERS = {
    "listen": r"^listen_addr = \*\nlisten_port = 6432$",
    "database": r"^bookshelf = host=db port=5432 dbname=bookshelf$",
    "auth_file": r"^auth_file = /etc/pgbouncer/userlist.txt$",
}


def say(message: str) -> None:
    sys.stdout.write(f"test-pgbouncer: {message}\n")
    sys.stdout.flush()


def scram_secret(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 secret of `password`, as PostgreSQL keeps it in pg_authid (RFC 5802)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def substituted(text: str, port: int, auth_file: Path) -> str:
    replacements = {
        "listen": f"listen_addr = 127.0.0.1\nlisten_port = {port}",
        "database": (
            f"{DATABASE} = host=127.0.0.1 port=5432 dbname={DATABASE}\n* = host=127.0.0.1 port=5432"
        ),
        "auth_file": f"auth_file = {auth_file}",
    }
    for key, pattern in PLACEHOLDERS.items():
        text, count = re.subn(pattern, replacements[key], text, flags=re.M)
        if count != 1:
            raise SystemExit(f"{pattern!r} occurs {count} times in {SHIPPED}, not once")
    return text


def drop_databases(connection: psycopg.Connection) -> None:
    """DATABASE, and any database an earlier run's tests left behind."""
    names = connection.execute(
        "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
        [DATABASE, f"{DATABASE}\\_%"],
    ).fetchall()
    for (name,) in names:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def start_pgbouncer(directory: Path, password: str) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("pgbouncer", path=os.pathsep.join([os.environ["PATH"], *SBIN]))
    if binary is None:
        raise SystemExit("pgbouncer is not installed: apt-get install pgbouncer")
    port = free_port()
    auth_file = directory / "userlist.txt"
    auth_file.write_text(f'"{USER}" "{scram_secret(password)}"\n')
    config = directory / "pgbouncer.ini"
    config.write_text(substituted(SHIPPED.read_text(), port, auth_file))
    command = [binary, str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
        for path in (auth_file, config):
            os.chown(path, account.pw_uid, account.pw_gid)
        command += ["-u", "postgres"]
    log = (directory / "pgbouncer.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    if not wait_for_port(port, process, timeout=10):
        process.kill()
        raise SystemExit(f"pgbouncer did not start:\n{(directory / 'pgbouncer.log').read_text()}")
    say(f"PgBouncer {version(binary)} on 127.0.0.1:{port}, config {config}")
    return process, port


def version(binary: str) -> str:
    output = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return output.split("\n")[0].removeprefix("PgBouncer ").strip()


def run_suite(port: int, password: str, arguments: list[str]) -> int:
    url = f"postgresql+psycopg://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"
    env = os.environ | {"TEST_DATABASE_URL": url, "DATABASE_PGBOUNCER": "1"}
    if not arguments:
        arguments = [f"--ignore=tests/{module}" for module in NOT_THROUGH_PGBOUNCER]
    pytest = [sys.executable, "-m", "pytest", *arguments]
    suite = subprocess.Popen(pytest, cwd=ROOT, env=env, start_new_session=True)
    try:
        return suite.wait(timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        say(f"the suite took over {SUITE_TIMEOUT_S} s: stopped")
        os.killpg(suite.pid, signal.SIGKILL)
        suite.wait()
        return 1


def main() -> int:
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        drop_databases(connection)
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
        # What the README's `ALTER ROLE bookshelf SET statement_timeout` gives a deployment:
        # PgBouncer passes on no `options`, so the server's limit comes with the session.
        connection.execute(
            f"ALTER DATABASE \"{DATABASE}\" SET statement_timeout = '{SERVER_STATEMENT_TIMEOUT}'"
        )
    directory = Path(tempfile.mkdtemp(prefix="bookshelf-pgbouncer-"))
    password = secrets.token_hex(16)
    pgbouncer, port = start_pgbouncer(directory, password)
    try:
        status = run_suite(port, password, sys.argv[1:])
    finally:
        pgbouncer.terminate()  # SIGTERM: PgBouncer closes its connections and exits
        try:
            pgbouncer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pgbouncer.kill()
            pgbouncer.wait()
    if status != 0:
        say(f"PgBouncer's log:\n{(directory / 'pgbouncer.log').read_text()[-4000:]}")
    shutil.rmtree(directory, ignore_errors=True)
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        drop_databases(connection)
    return status


if __name__ == "__main__":
    sys.exit(main())
