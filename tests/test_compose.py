"""docker-compose.yml: valid under the Compose specification, and the stack the README describes
(two API replicas behind one address, on PostgreSQL and Redis). No network, no container engine."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is missing: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def stack():
    return yaml.safe_load(COMPOSE.read_text())


def compose_schema_errors(path: Path) -> str | None:
    """The Compose specification's JSON schema, as vendored by check-jsonschema: None if valid."""
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.skip("check-jsonschema is missing: pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if result.returncode == 0 else result.stdout + result.stderr


def test_the_compose_file_follows_the_compose_specification():
    assert compose_schema_errors(COMPOSE) is None


def test_the_schema_check_does_catch_mistakes(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace:"))
    assert "stop_grace" in compose_schema_errors(broken)


def test_two_api_replicas_share_postgresql_and_redis(stack):
    api = stack["services"]["api"]
    # Compose's default mode, written out: podman-compose reads replicas only beside it.
    assert api["deploy"] == {"mode": "replicated", "replicas": 2}
    assert "ports" not in api, "the replicas are reached through the proxy only"
    env = api["environment"]
    assert env["APP_ENV"] == "production"
    assert re.fullmatch(
        r"postgresql\+psycopg://bookshelf:\$\{POSTGRES_PASSWORD:\?[^}]+\}@db:5432/bookshelf",
        env["DATABASE_URL"],
    )
    assert env["RATELIMIT_STORAGE_URI"] == "redis://redis:6379"
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), "no default secret"
    assert env["TRUSTED_PROXIES"] == "1", "exactly one proxy hop: the nginx in front"
    assert env["ALLOWED_HOSTS"].startswith("${ALLOWED_HOSTS:-"), "production needs an allowlist"
    assert api["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }
    assert api["build"] == "." and (ROOT / "Dockerfile").is_file()


def test_migrations_run_once_before_the_replicas(stack):
    migrate = stack["services"]["migrate"]
    assert migrate["command"] == ["bookshelf", "init-db"]
    assert migrate["image"] == stack["services"]["api"]["image"]
    assert migrate["environment"] == stack["services"]["api"]["environment"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}


def test_one_address_in_front_of_the_replicas(stack):
    services = stack["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    proxy = services["proxy"]
    assert proxy["ports"] == ["${PORT:-8000}:8000"]
    source, target, _ = proxy["volumes"][0].split(":")
    assert target == "/etc/nginx/nginx.conf", "a complete main configuration, events {} included"
    conf = (ROOT / source).read_text()
    assert re.search(r"^events \{", conf, re.M) and re.search(r"^http \{", conf, re.M)
    assert re.search(r"^\s*listen 8000;", conf, re.M)
    assert re.search(r"^\s*server api:8000\b", conf, re.M), "the replicas' service name and port"
    assert "proxy_pass http://api;" in conf
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "\nHEALTHCHECK " in (ROOT / "Dockerfile").read_text(), "what makes a replica healthy"


def test_nginx_runs_under_the_script_that_follows_the_replicas(stack):
    proxy = stack["services"]["proxy"]
    mounts = dict(volume.split(":")[:2] for volume in proxy["volumes"])
    script = mounts["./deploy/nginx-follow-replicas.sh"]
    assert (ROOT / "deploy" / "nginx-follow-replicas.sh").is_file()
    assert proxy["command"] == ["/bin/sh", script, "-g", "daemon off;"], "nginx in the foreground"


def test_postgresql_and_redis_report_their_health(stack):
    db, redis = stack["services"]["db"], stack["services"]["redis"]
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # Over TCP: the image's set-up server listens on the socket alone, and is about to stop.
    assert db["healthcheck"]["test"][2:4] == ["-h", "127.0.0.1"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "db-data" in stack["volumes"]


def test_every_image_not_built_here_has_a_stand_in_recipe(stack):
    """What `make compose-test` builds from Debian's packages where no registry answers."""
    for name, service in stack["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        recipe = ROOT / "deploy" / "standins" / image.partition(":")[0] / "Containerfile"
        assert recipe.is_file(), f"{name}: no stand-in for {image} in deploy/standins/"
        assert f"stand-in for the official {image} image" in recipe.read_text()
