"""What the benchmark needs beyond the project's venv: wrk (Debian package) and a separate venv
(bench/.venv) with FastAPI and uvicorn for reference (d)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from progress import log

BENCH = Path(__file__).resolve().parent
BENCH_VENV = BENCH / ".venv"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
# uvicorn[standard]: uvloop and httptools, as uvicorn is usually deployed.
FASTAPI_REQUIREMENTS = [
    "fastapi",
    "uvicorn[standard]",
    "SQLAlchemy>=2.0,<3",
    "psycopg[binary]>=3.2",
]
INSTALL_TIMEOUT_S = 900


def ensure_wrk() -> str:
    """wrk's path; installs the Debian package when it is missing (needs root)."""
    if path := shutil.which("wrk"):
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("bench: wrk is missing: install it (Debian/Ubuntu: apt-get install wrk)")
    log("wrk is missing: apt-get update && apt-get install wrk")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(
            argv, check=True, env=env, timeout=INSTALL_TIMEOUT_S, stdout=subprocess.DEVNULL
        )
    if path := shutil.which("wrk"):
        return path
    sys.exit("bench: wrk could not be installed")


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr).splitlines()[0]  # "wrk 4.1.0 [epoll] Copyright ..."
    return first.split(" [")[0].strip()


def ensure_fastapi_venv() -> tuple[Path | None, str]:
    """(python of bench/.venv, "") when FastAPI and uvicorn import there, else (None, why not)."""
    stamp = BENCH_VENV / ".installed"
    wanted = "\n".join(FASTAPI_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted and _imports_ok():
        return BENCH_PYTHON, ""
    try:
        if not BENCH_PYTHON.exists():
            log(f"creating {BENCH_VENV} for FastAPI + uvicorn")
            subprocess.run(
                [sys.executable, "-m", "venv", str(BENCH_VENV)],
                check=True,
                timeout=INSTALL_TIMEOUT_S,
                capture_output=True,
            )
        log(f"pip install {' '.join(FASTAPI_REQUIREMENTS)} into {BENCH_VENV}")
        subprocess.run(
            [
                str(BENCH_PYTHON),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *FASTAPI_REQUIREMENTS,
            ],
            check=True,
            timeout=INSTALL_TIMEOUT_S,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        tail = " ".join((exc.stderr or exc.stdout or "").strip().splitlines()[-2:])
        return None, f"FastAPI/uvicorn could not be installed: {tail or exc}"
    except (subprocess.TimeoutExpired, OSError) as exc:
        return None, f"FastAPI/uvicorn could not be installed: {exc}"
    if not _imports_ok():
        return None, "FastAPI/uvicorn installed but do not import"
    stamp.write_text(wanted)
    return BENCH_PYTHON, ""


def fastapi_versions(python: Path) -> str:
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import fastapi, uvicorn; print(fastapi.__version__, uvicorn.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    fastapi, uvicorn = out.stdout.split()
    return f"FastAPI {fastapi}, uvicorn {uvicorn}"


def _imports_ok() -> bool:
    if not BENCH_PYTHON.exists():
        return False
    probe = "import fastapi, uvicorn, sqlalchemy, psycopg"
    return (
        subprocess.run(
            [str(BENCH_PYTHON), "-c", probe], capture_output=True, timeout=120
        ).returncode
        == 0
    )
