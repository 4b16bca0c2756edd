"""Driving wrk and reading its report."""

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

WRK_SCRIPTS = Path(__file__).resolve().parent / "wrk"
WRK_TIMEOUT = "10s"  # a response slower than this counts as a socket timeout error
SLACK_S = 30  # how long past its duration a wrk run may take before it is killed

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class Load:
    """One wrk invocation."""

    url: str
    connections: int
    threads: int
    script: str | None = None  # a file in bench/wrk/
    script_args: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)

    def argv(self, duration_s: float) -> list[str]:
        argv = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{duration_s:g}s"]
        argv += ["--latency", "--timeout", WRK_TIMEOUT]
        for header in self.headers:
            argv += ["-H", header]
        if self.script:
            argv += ["-s", str(WRK_SCRIPTS / self.script)]
        argv.append(self.url)
        if self.script_args:
            argv += ["--", *self.script_args]
        return argv


@dataclass
class WrkResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: dict  # connect, read, write, timeout

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict:
        return asdict(self)


def run(loads: list[Load], duration_s: float) -> list[WrkResult]:
    """Run the loads at the same time (one wrk each) and parse every report."""
    procs = []
    try:
        for load in loads:
            procs.append(
                subprocess.Popen(
                    load.argv(duration_s),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=duration_s + SLACK_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for p, output in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"wrk exited with {p.returncode}:\n{output}")
        results.append(parse(output))
    return results


def parse(report: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", report, re.M)
    total = re.search(r"^\s*(\d+) requests in ", report, re.M)
    if not rps or not total:
        raise RuntimeError(f"unexpected wrk output:\n{report}")
    percentiles = {
        int(m[1]): float(m[2]) * _UNITS_MS[m[3]]
        for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", report, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    names = ("connect", "read", "write", "timeout")
    return WrkResult(
        requests=int(total[1]),
        requests_per_s=float(rps[1]),
        p50_ms=percentiles.get(50, float("nan")),
        p99_ms=percentiles.get(99, float("nan")),
        non_2xx_3xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=dict(zip(names, map(int, sockets.groups()), strict=True))
        if sockets
        else dict.fromkeys(names, 0),
    )
