"""GET /metrics scraped by a real Prometheus (Debian's `prometheus` package) from a real waitress
server, and read back through Prometheus' query API: what an operator's dashboards would see."""

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.processes import call, free_port, stop_process, wait_for_port

# Debian's package puts it in /usr/bin, which a user's PATH may lack.
PROMETHEUS = shutil.which("prometheus") or shutil.which("/usr/bin/prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)"
)

TOKEN = "metrics-token-0123456789abcdef"
BOOK = "/api/v1/books/<id:book_id>"
DEADLINE = 30  # seconds for Prometheus to scrape what the test expects


class Prometheus:
    """The real Prometheus in the foreground on a free port, with its data and log in
    `directory`, scraping every second the jobs of `scrape_configs` (YAML, indented as a list
    under `scrape_configs:`)."""

    def __init__(self, directory: Path, scrape_configs: str):
        self.port = free_port()
        self.config = directory / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
            + scrape_configs
        )
        self.data = directory / "prometheus-data"
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        command = [
            PROMETHEUS,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if not wait_for_port(self.port, self.process, timeout=20) or not self._ready():
            self.stop()
            raise RuntimeError(f"prometheus did not start:\n{self.log()}")
        return self

    def _ready(self) -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url("/-/ready"), timeout=5) as response,
            ):
                if response.status == 200:
                    return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def url(self, path: str, **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"

    def api(self, path: str, **params: str):
        """The `data` of an answer of the HTTP API (/api/v1/...)."""
        with urllib.request.urlopen(self.url(path, **params), timeout=5) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str) -> list[tuple[dict, float]]:
        """An instant query's series: (labels, value)."""
        data = self.api("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def last_errors(self) -> dict[str, str]:
        """Each job's last scrape error ("" after a good scrape)."""
        targets = self.api("/api/v1/targets")["activeTargets"]
        return {t["labels"]["job"]: t["lastError"] for t in targets}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


@pytest.fixture
def prometheus(tmp_path):
    started = []

    def start(scrape_configs: str) -> Prometheus:
        started.append(Prometheus(tmp_path, scrape_configs).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def scrape_job(name: str, port: int, authorization: str) -> str:
    return (
        f"  - job_name: {name}\n"
        f"    authorization: {{{authorization}}}\n"
        f"    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )


def test_prometheus_scrapes_the_request_counter(start_api, prometheus, tmp_path):
    api = start_api(METRICS_TOKEN=TOKEN)
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    server = prometheus(
        scrape_job("bookshelf", api.port, f"credentials_file: {token_file}")
        + scrape_job("wrong-token", api.port, "credentials: wrong-token-0123456789abcdef")
    )

    for _ in range(3):
        assert call(api.port, "GET", "/api/v1/books")[0] == 200
    for book_id in (1, 2):  # two paths, one route template
        assert call(api.port, "GET", f"/api/v1/books/{book_id}")[0] == 404
    assert call(api.port, "GET", "/nowhere")[0] == 404
    expected = {
        ("GET", "/api/v1/books", "200"): 3,
        ("GET", BOOK, "404"): 2,
        ("GET", "unmatched", "404"): 1,
    }

    # Scrapes are not counted, and nothing else asks the server: the counts are exact.
    seen = {}
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        counts = {
            (labels["method"], labels["route"], labels["status"]): value
            for labels, value in server.query('bookshelf_http_requests_total{job="bookshelf"}')
        }
        up = {labels["job"]: value for labels, value in server.query("up")}
        seen = {"bookshelf_http_requests_total": counts, "up": up}
        if counts == expected and up == {"bookshelf": 1, "wrong-token": 0}:
            break
        time.sleep(0.5)
    else:
        pytest.fail(
            f"Prometheus did not report the expected series within {DEADLINE} s.\n"
            f"expected: {expected}, up: bookshelf 1, wrong-token 0\nlast seen: {seen}\n"
            f"targets' last errors: {server.last_errors()}\nprometheus's log:\n{server.log()}"
        )

    errors = server.last_errors()
    assert "401" in errors["wrong-token"], errors  # refused by the app, not unreachable
