"""The TypeScript client test, as CI runs it (`make client-test`): a real server on a free port
and a new SQLite database, types generated from the document it serves (openapi-typescript),
the app-style flow type-checked with `tsc --noEmit --strict`, then run with Node against it.

Usage: python clients/typescript/run.py   (from the repository, with its .venv's Python)
Needs Node 20+ and npm; the npm packages are those of package-lock.json (`npm ci`).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import ServerProcess  # noqa: E402  (after the path is set)

STEP_TIMEOUT = 600  # seconds for any one step: npm ci on a cold cache is the slowest


def say(message: str, stream=sys.stdout) -> None:
    stream.write(f"client-test: {message}\n")
    stream.flush()


def run(*command: str, cwd: Path = HERE, env: dict | None = None) -> None:
    say("+ " + " ".join(command))
    subprocess.run(command, cwd=cwd, env=env, check=True, timeout=STEP_TIMEOUT)


def npm_ci() -> None:
    """Install exactly the locked packages, unless node_modules already holds them."""
    installed = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        run("npm", "ci", "--no-audit", "--no-fund")


def main() -> int:
    for tool in ("node", "npm", "npx"):
        if shutil.which(tool) is None:
            say(f"{tool} is not on PATH: install Node 20+ (Debian: apt-get install nodejs npm)")
            return 2
    npm_ci()
    with tempfile.TemporaryDirectory(prefix="bookshelf-client-test-") as tmp:
        database = f"sqlite:///{Path(tmp) / 'client-test.db'}"
        env = {"DATABASE_URL": database, "APP_ENV": "testing", "LOG_LEVEL": "WARNING"}
        run(
            sys.executable,
            "-c",
            "from bookshelf.cli import main; main()",
            "init-db",
            cwd=ROOT,
            env=os.environ | env,
        )
        server = ServerProcess(Path(tmp) / "server.log", **env).start()
        try:
            base_url = f"http://127.0.0.1:{server.port}"
            with urllib.request.urlopen(f"{base_url}/api/v1/openapi.json", timeout=30) as answer:
                document = json.load(answer)
            (HERE / "openapi.json").write_text(json.dumps(document, indent=2))
            run("npx", "openapi-typescript", "openapi.json", "--output", "src/schema.d.ts")
            run("npx", "tsc", "--noEmit", "--strict", "-p", "tsconfig.json")
            run("npx", "tsc", "-p", "tsconfig.json")
            run("node", "dist/flow.js", base_url)
        except subprocess.CalledProcessError as failed:
            say(f"failed: {' '.join(failed.cmd)}", sys.stderr)
            say("server log:\n" + (Path(tmp) / "server.log").read_text(), sys.stderr)
            return 1
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
