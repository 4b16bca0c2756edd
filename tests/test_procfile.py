"""The Procfile (Heroku and other PaaS): `web` serves on every interface at the platform's PORT,
`release` migrates; both are commands of the `bookshelf` console script."""

import shlex
import subprocess
import sys
from pathlib import Path

from tests.processes import ROOT

BOOKSHELF = Path(sys.executable).parent / "bookshelf"


def procfile() -> dict[str, list[str]]:
    """Process type -> (environment assignments and command) as the platform's shell splits it."""
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, command = line.split(":", 1)
            processes[kind.strip()] = shlex.split(command)
    return processes


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, words


def test_web_serves_on_every_interface_at_the_platforms_port_and_release_migrates():
    processes = procfile()
    assert set(processes) == {"web", "release"}
    env, command = split_env(processes["web"])
    assert command == ["bookshelf", "serve"]
    assert env == {"HOST": "0.0.0.0"}  # PORT is the platform's
    assert split_env(processes["release"]) == ({}, ["bookshelf", "init-db"])


def test_the_procfile_commands_exist_in_the_console_script(tmp_path):
    for words in procfile().values():
        _, command = split_env(words)
        result = subprocess.run(
            [str(BOOKSHELF), *command[1:], "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"Usage: bookshelf {command[1]}" in result.stdout
