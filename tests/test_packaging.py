"""The package as shipped: the lock files agree with pyproject.toml and are installed with their
hashes, every runtime dependency has an upper bound, and `pip install .` gives a `bookshelf`
command that serves from any directory."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DISTRIBUTION = "bookshelf-api-server"
UPPER_BOUNDS = {"<", "<=", "==", "~=", "==="}
# name==version [; marker] \, then one `--hash=sha256:...` line or more (pip-compile's format).
PIN = re.compile(r"^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)[^\n]*\n((?:\s+--hash=\S+.*\n)+)", re.M)


def pinned(lock: str) -> dict[str, set[str]]:
    """{canonical name: versions} of a lock file in requirements/ (a name can have one version per
    Python version: the lock is for every platform); every pin has its hashes."""
    text = (ROOT / "requirements" / lock).read_text()
    found = PIN.findall(text)
    lines = [line for line in text.splitlines() if re.match(r"[A-Za-z0-9]", line)]
    assert len(lines) == len(found), f"{lock}: a pin without a hash, or not name==version"
    pins = {}
    for name, version, _ in found:
        pins.setdefault(canonicalize_name(name), set()).add(version)
    return pins


def requirements(kind: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    listed = {
        "runtime": project["dependencies"],
        "dev": project["dependencies"] + project["optional-dependencies"]["dev"],
        "build": PYPROJECT["build-system"]["requires"],
    }[kind]
    return [Requirement(line) for line in listed]


# The lock files and pyproject.toml


def disagreements(wanted: list[Requirement], pins: dict[str, set[str]]) -> list[str]:
    """What in `wanted` the lock does not satisfy: a name missing, or a version outside."""
    found = []
    for requirement in wanted:
        versions = pins.get(canonicalize_name(requirement.name))
        if not versions:
            found.append(f"{requirement.name} is not locked")
        found += [
            f"{requirement.name}=={version} is outside {requirement}"
            for version in sorted(versions or ())
            if not requirement.specifier.contains(version, prereleases=True)
        ]
    return found


@pytest.mark.parametrize("kind", ["runtime", "dev", "build"])
def test_every_requirement_is_locked_at_a_version_it_allows(kind):
    """Edit pyproject.toml's requirements, then `make lock`: this fails until then."""
    assert disagreements(requirements(kind), pinned(f"{kind}.txt")) == [], "make lock"


def test_the_dev_set_keeps_the_runtime_versions():
    runtime, dev = pinned("runtime.txt"), pinned("dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_a_pyproject_that_moved_past_its_lock_disagrees_with_it():
    pins = pinned("runtime.txt")
    moved = [Requirement("Flask>=99,<100"), Requirement("Not-Locked_Yet>=1,<2")]
    assert disagreements(moved, pins) == [
        f"Flask=={version} is outside Flask<100,>=99" for version in sorted(pins["flask"])
    ] + ["Not-Locked_Yet is not locked"]


def test_every_runtime_dependency_has_an_upper_bound():
    """A new major release of any of them is a change we make, not one a build picks up."""
    unbounded = [
        str(requirement)
        for requirement in requirements("runtime")
        if not any(spec.operator in UPPER_BOUNDS for spec in requirement.specifier)
    ]
    assert unbounded == []


def test_every_install_verifies_the_hashes():
    """The Makefile and the Dockerfile install requirements/*.txt with --require-hashes, and
    the project itself with --no-deps: nothing is resolved at install time."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = re.findall(r"^\t(.*)", makefile, re.M) + re.findall(r"^RUN (.*)", dockerfile, re.M)
    installs = [
        command
        for line in lines
        for command in line.split("&&")
        if re.search(r"\$\(PIP\)|\bpip\b.*\binstall\b", command) and "uninstall" not in command
    ]
    assert len(installs) == 6, installs
    for command in installs:
        if "--requirement" in command:
            assert "--require-hashes" in command, command
            assert re.search(r"--requirement (requirements|/tmp)/\w+\.txt", command), command
        else:
            assert "--no-deps" in command, command
    assert "make lock" in (ROOT / "requirements" / "runtime.txt").read_text()


# The distribution and its command


def test_the_distribution_and_its_command():
    """Named so as not to clash with `bookshelf` on PyPI, another project's; the import package
    is still `bookshelf`."""
    assert PYPROJECT["project"]["name"] == DISTRIBUTION
    assert PYPROJECT["project"]["scripts"] == {"bookshelf": "bookshelf.cli:main"}
    installed = distribution(DISTRIBUTION)
    (script,) = [ep for ep in installed.entry_points if ep.group == "console_scripts"]
    assert (script.name, script.value) == ("bookshelf", "bookshelf.cli:main")


def test_bookshelf_serve_loads_no_alembic():
    """The command line's module and the server's import only what serving needs: Alembic
    (8 MiB) is for the commands that migrate."""
    program = (
        "import sys, bookshelf.cli, bookshelf.server\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'flask_migrate'}))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` into a virtual environment of its own: the project alone (--no-deps,
    --no-build-isolation), its dependencies taken from this one's site-packages."""
    here = tmp_path_factory.mktemp("install")
    source = here / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "bookshelf", source / "bookshelf", ignore=ignore)
    venv = here / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(ours + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            source,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return venv


def test_pip_install_then_bookshelf_lists_its_commands(installed, tmp_path):
    done = subprocess.run(
        [installed / "bin" / "bookshelf", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    commands = re.findall(r"^  (\S+)  ", done.stdout.partition("Commands:")[2], re.M)
    assert {"serve", "init-db", "create-admin", "prune"} <= set(commands), done.stdout


def test_pip_install_then_bookshelf_serve_from_any_directory(installed, tmp_path):
    """`bookshelf init-db`, then `bookshelf serve`, started in an empty directory, run the
    installed package (not the checkout's), answer /health/ready, and stop cleanly on SIGTERM."""
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FLASK_", "PYTHON")) and key not in {"DATABASE_URL", "VIRTUAL_ENV"}
    } | {
        "APP_ENV": "testing",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bookshelf.db'}",
        "PORT": str(port),
    }
    bookshelf = installed / "bin" / "bookshelf"
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import bookshelf; print(bookshelf.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr
    migrated = subprocess.run(
        [bookshelf, "init-db"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "database ready" in migrated.stdout
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [bookshelf, "serve"], cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            assert wait_for_port(port, server), log.read_text()
            for path in ("/health", "/health/ready"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                    assert answer.status == 200, path
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=15)
    assert code == 0, log.read_text()
    assert "SIGTERM: stopping" in log.read_text()
