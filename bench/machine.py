"""How much CPU the rest of the machine used while a row was measured: the benchmark shares the
machine with whatever else runs, and a busy neighbour lowers every number."""

import os
import resource

_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU time spent by everything on the machine so far (/proc/stat: all but idle, iowait)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
    return (user + nice + system + irq + softirq) / _TICKS


def _process_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a process; with `children`, only what it collected from exited ones."""
    with open(f"/proc/{pid}/stat") as stat:
        after_name = stat.read().rsplit(")", 1)[1].split()
    first = 13 if children else 11  # cutime, cstime / utime, stime
    return (int(after_name[first]) + int(after_name[first + 1])) / _TICKS


def _database_seconds(database: str | None) -> float:
    """PostgreSQL's backends serving `database` (their command line names it), plus the
    backends that have exited (the time the postmaster collected from its children)."""
    if not database:
        return 0.0
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                words = f.read().replace(b"\0", b" ").decode(errors="replace").split()
            if words[:1] == ["postgres:"] and database in words:
                total += _process_seconds(int(entry))
            elif words and words[0].endswith("/postgres") and "-D" in words:
                total += _process_seconds(int(entry), children=True)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return total


def _own_seconds() -> float:
    """This process and its reaped children (the wrk runs)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class CpuWatch:
    """Started before the measured rounds and read after them, while the servers still run."""

    def __init__(self, server_pids: list[int], database: str | None = None):
        self.pids = server_pids
        self.database = database  # a PostgreSQL database name: its backends count as ours
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        servers = sum(_process_seconds(pid) for pid in self.pids)
        return (
            _busy_seconds(),
            servers + _own_seconds(),
            _database_seconds(self.database),
            os.times().elapsed,
        )

    def read(self) -> dict:
        """CPU seconds per second (cores) used by the servers and wrk, by the PostgreSQL
        backends of the benchmark's database, and by everything else."""
        deltas = (b - a for a, b in zip(self.start, self._sample(), strict=True))
        busy, ours, database, elapsed = deltas
        elapsed = max(elapsed, 1e-9)
        return {
            "bench_cores": round(ours / elapsed, 2),
            "database_cores": round(database / elapsed, 2),
            "other_cores": round(max(busy - ours - database, 0.0) / elapsed, 2),
        }
