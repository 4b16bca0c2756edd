"""Set-ups that take turns, round by round: reference (c), a row's partners, then the row. A
turn is one wrk run (or several at once, one per port); a set-up's figures are the medians of
its turns, and its ratios the medians of ratios taken within a round, a few seconds apart."""

import statistics
import time
from dataclasses import dataclass, field

import load
from pgstat import Sessions
from servers import Server


@dataclass(eq=False)
class Setup:
    """What one turn loads, and the turns it has had."""

    label: str
    request: str  # a key of run.REQUESTS
    connections: int  # wrk's, over all its targets
    servers: list[Server]  # the Bookshelf or reference processes answering: their RSS is its
    targets: list[Server]  # what wrk connects to: the servers, or the nginx in front of them
    loads: list[load.Load] = field(default_factory=list)
    versus: "Setup | None" = None  # the set-up its "x 1 proc" ratio is taken against
    turns: list[dict] = field(default_factory=list)


def take_turn(setup: Setup, duration: float, sessions: Sessions | None) -> dict:
    """One turn of `setup`; with `sessions`, the PostgreSQL sessions it opened too."""
    before = sessions.read() if sessions else 0
    started = time.monotonic()
    turn = combine(load.run(setup.loads, duration))
    if sessions:
        turn["new_connections"] = sessions.read() - before
        turn["seconds"] = round(time.monotonic() - started, 2)
    setup.turns.append(turn)
    return turn


def pair(setup: Setup, base: Setup | None) -> str:
    """The ratios of `setup`'s last turn to those of this round before it; their text."""
    turn, text = setup.turns[-1], ""
    if base is not None:
        before = base.turns[-1]["requests_per_s"]
        turn["ratio"] = turn["requests_per_s"] / before
        text += f" ({turn['ratio']:.2f}x ref (c)'s {before:.0f})"
    if setup.versus is not None:
        before = setup.versus.turns[-1]["requests_per_s"]
        turn["scale_ratio"] = turn["requests_per_s"] / before
        text += f" ({turn['scale_ratio']:.2f}x {setup.versus.label}'s {before:.0f})"
    return text


def combine(parts: list[load.WrkResult]) -> dict:
    """One turn from the wrk instances run at the same time: summed throughput and errors, the
    worse of their latencies."""
    return {
        "requests": sum(p.requests for p in parts),
        "requests_per_s": sum(p.requests_per_s for p in parts),
        "p50_ms": max(p.p50_ms for p in parts),
        "p99_ms": max(p.p99_ms for p in parts),
        "non_2xx_3xx": sum(p.non_2xx_3xx for p in parts),
        "socket_errors": sum(sum(p.socket_errors.values()) for p in parts),
        "wrk": [p.as_dict() for p in parts],
    }


def summary(setup: Setup, base: Setup | None, idle: dict, after: dict) -> dict:
    """A set-up's result: medians of its turns, errors and new connections summed; `idle` and
    `after` map each server to its RSS (KiB)."""
    turns = setup.turns
    result = {
        "requests_per_s": statistics.median(t["requests_per_s"] for t in turns),
        "p50_ms": statistics.median(t["p50_ms"] for t in turns),
        "p99_ms": statistics.median(t["p99_ms"] for t in turns),
        "idle_rss_kib": sum(idle[s] for s in setup.servers),
        "load_rss_kib": sum(after[s] for s in setup.servers),
        "rss_per_process_kib": {
            "idle": [idle[s] for s in setup.servers],
            "after_load": [after[s] for s in setup.servers],
        },
        "non_2xx_3xx": sum(t["non_2xx_3xx"] for t in turns),
        "socket_errors": sum(t["socket_errors"] for t in turns),
        "wrk_instances": len(setup.loads),
    }
    if base is not None:
        result["ratio"] = statistics.median(t["ratio"] for t in turns)
        result["baseline_requests_per_s"] = [t["requests_per_s"] for t in base.turns]
    if setup.versus is not None:
        result["scale_ratio"] = statistics.median(t["scale_ratio"] for t in turns)
        result["one_process_requests_per_s"] = [t["requests_per_s"] for t in setup.versus.turns]
    if "new_connections" in turns[0]:
        opened, seconds = (sum(t[key] for t in turns) for key in ("new_connections", "seconds"))
        result["new_connections"] = opened
        result["new_connections_per_s"] = opened / seconds
    return result | {"rounds": turns}
