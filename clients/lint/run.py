"""The OpenAPI document's lint, as CI runs it (`make lint`): Spectral (`spectral:oas` and the
OWASP ruleset, .spectral.yaml) and Redocly (redocly.yaml), both failing on any error, on the
document the app serves.

Usage: python clients/lint/run.py   (from the repository, with its .venv's Python)
Needs Node 20+ and npm; the npm packages are those of package-lock.json (`npm ci`).
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

STEP_TIMEOUT = 600


def say(message: str) -> None:
    sys.stdout.write(f"openapi-lint: {message}\n")
    sys.stdout.flush()


def run(*command: str) -> int:
    say("+ " + " ".join(command))
    return subprocess.run(command, cwd=HERE, timeout=STEP_TIMEOUT).returncode


def served_document() -> dict:
    """The document as GET /api/v1/openapi.json serves it, from an app on a scratch database."""
    from bookshelf import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            {"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/lint.db"}
        )
        response = app.test_client().get("/api/v1/openapi.json")
        assert response.status_code == 200, response.status_code
        return response.get_json()


def installed() -> bool:
    """Whether node_modules holds the packages of package-lock.json (npm ci's record)."""
    record = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    return record.is_file() and record.stat().st_mtime >= lock.stat().st_mtime


def main() -> int:
    if shutil.which("npm") is None:
        say("npm is not on PATH: install Node 20+ (Debian: apt-get install nodejs npm)")
        return 2
    if not installed() and run("npm", "ci", "--no-audit", "--no-fund"):
        return 1
    (HERE / "openapi.json").write_text(json.dumps(served_document(), indent=2))
    failures = run(
        "npx", "spectral", "lint", "openapi.json", "--ruleset", ".spectral.yaml",
        "--fail-severity", "error",
    )  # fmt: skip
    failures += run("npx", "redocly", "lint", "openapi.json", "--config", "redocly.yaml")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
