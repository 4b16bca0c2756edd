import json
import subprocess
import sys

from alembic.script import ScriptDirectory
from flask_migrate import upgrade
from sqlalchemy import event, text

from bookshelf import MIGRATIONS, create_app
from bookshelf.extensions import db
from bookshelf.schema import head_revision
from tests.processes import ROOT
from tests.support import assert_error

UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"
NOT_MIGRATED = "The database schema is not at the latest migration."


def test_liveness_needs_no_database():
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": UNREACHABLE})
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["X-Request-ID"]


def test_readiness_answers_when_the_database_does(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_readiness_and_requests_are_503_when_the_database_is_unreachable():
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": UNREACHABLE})
    client = app.test_client()
    error = assert_error(client.get("/health/ready"), 503, "SERVICE_UNAVAILABLE")
    assert error["message"] == "The database is not reachable."
    error = assert_error(client.get("/api/v1/books"), 503, "SERVICE_UNAVAILABLE")
    assert "psycopg" not in error["message"] and "127.0.0.1" not in error["message"]


def test_readiness_is_one_query_of_the_schema_revision(app, client):
    statements = []
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert client.get("/health/ready").status_code == 200
    assert statements == ["SELECT version_num FROM alembic_version"]


# --- the schema must be at the head revision ---------------------------------------------------


def assert_not_migrated(response):
    error = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert error["message"] == NOT_MIGRATED
    assert error["details"] == {}


def test_readiness_is_503_on_a_database_with_no_schema(bare_app):
    client = bare_app.test_client()
    assert_not_migrated(client.get("/health/ready"))
    # What readiness spares the load balancer: every API call failing.
    assert client.get("/api/v1/books").status_code >= 500


def test_readiness_is_503_until_the_last_migration_is_applied(bare_app):
    client = bare_app.test_client()
    below_head = ScriptDirectory(MIGRATIONS).get_revision(head_revision()).down_revision
    with bare_app.app_context():
        upgrade(revision=below_head)
    assert_not_migrated(client.get("/health/ready"))
    with bare_app.app_context():
        upgrade()
    response = client.get("/health/ready")
    assert response.status_code == 200, response.get_data(as_text=True)


def test_readiness_answers_after_init_db(bare_app):
    result = bare_app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert bare_app.test_client().get("/health/ready").status_code == 200


def set_revision(app, revision):
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_a_process_that_saw_its_head_stays_ready_when_the_next_release_migrates(
    make_app, database_url
):
    serving = make_app()
    assert serving.test_client().get("/health/ready").status_code == 200
    set_revision(serving, "a_later_release")  # a rolling deploy: the new release has migrated
    assert serving.test_client().get("/health/ready").status_code == 200
    # A process of this release that starts now has never seen its head: not ready.
    late = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url})
    assert_not_migrated(late.test_client().get("/health/ready"))
    with late.app_context():
        db.engine.dispose()


def test_a_process_that_saw_its_head_is_not_ready_once_the_schema_is_gone(app, client):
    assert client.get("/health/ready").status_code == 200
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert_not_migrated(client.get("/health/ready"))


def test_a_serving_process_answers_readiness_without_loading_alembic(app, database_url):
    """`python wsgi.py` builds its app without the command line, which loads Alembic (8 MiB)."""
    program = (
        "import json, sys\n"
        "from bookshelf import create_app\n"
        "app = create_app({'APP_ENV': 'testing', 'SQLALCHEMY_DATABASE_URI': sys.argv[1]},"
        " commands=False)\n"
        "status = app.test_client().get('/health/ready').status_code\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'flask_migrate'})\n"
        "print(json.dumps([status, loaded]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, database_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [200, []]
