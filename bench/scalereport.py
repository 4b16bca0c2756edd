"""The scale table (bench/results/scale.md and .json) and issue 15's goals judged from it."""

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

DB_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# The shapes whose p50 at the largest size must stay within 2x of the smallest's.
FLAT_SHAPES = (
    "first page",
    "deep cursor page",
    "author=",
    "genre=",
    "q=dead",
    "q=garden",
    "sort=title",
    "sort=-published_year",
    "sort=author",
    "sort=-created_at",
)
FLAT_GOAL = 2.0
Q_GOAL_MS = 20.0
LOAD_GOAL = 0.6  # the 20-book page's req/s over the bare one-row reference's
SMALL, LARGE = 10_000, 1_000_000


def size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    return f"{size // 1000}k" if size % 1000 == 0 else f"{size:,}"


def _columns(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: (r["db"] != "sqlite", r["size"]))


def table(runs: list[dict]) -> list[str]:
    columns = _columns(runs)
    head = [f"{DB_NAMES[r['db']]} {size_label(r['size'])}" for r in columns]
    lines = [
        "| shape (p50 ms / req/s) | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in columns[0]["shapes"]:
        cells = []
        for r in columns:
            shape = r["shapes"].get(name)
            cells.append(f"{shape['p50_ms']:.1f} / {shape['rps']:,.0f}" if shape else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| `GET /books/{id}` (p50 only) | "
        + " | ".join(f"{r['one book p50_ms']:.1f}" for r in columns)
        + " |"
    )
    lines.append(
        "| bare one-row reference (c) (req/s) | "
        + " | ".join(f"{r['reference']['rps']:,.0f}" for r in columns)
        + " |"
    )
    lines.append(
        "| first page ÷ reference (c), req/s | "
        + " | ".join(f"{load_ratio(r):.2f}" for r in columns)
        + " |"
    )
    lines.append(
        "| other CPU (cores busy with other work) | "
        + " | ".join(f"{r.get('other_cores', float('nan')):.2f}" for r in columns)
        + " |"
    )
    return lines


def load_ratio(run: dict) -> float:
    return run["shapes"]["first page"]["rps"] / run["reference"]["rps"]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _find(run: dict, prefix: str) -> tuple[str, dict]:
    return next((n, s) for n, s in run["shapes"].items() if n.startswith(prefix))


def goals(runs: list[dict]) -> list[str]:
    lines = []
    for db in DB_NAMES:
        mine = {r["size"]: r for r in runs if r["db"] == db}
        if not mine:
            continue
        name = DB_NAMES[db]
        small, large = mine.get(SMALL), mine.get(LARGE)
        if small is None or large is None:
            lines.append(f"{name}: goals need {SMALL:,} and {LARGE:,} books; not measured.")
            continue
        lines += [_flat_goal(name, small, large), _q_goal(name, large)]
        lines.append(_load_goal(name, small, large))
    return lines


def _flat_goal(name: str, small: dict, large: dict) -> str:
    ratios = []
    for prefix in FLAT_SHAPES:
        shape_name, shape = _find(large, prefix)
        ratios.append((shape["p50_ms"] / _find(small, prefix)[1]["p50_ms"], shape_name))
    ranked = sorted(ratios, reverse=True)
    misses = [f"{shape} {ratio:.1f}x" for ratio, shape in ranked if ratio > FLAT_GOAL]
    worst = ranked[0]
    text = (
        f"{name}: p50 at 1M within {FLAT_GOAL:g}x of 10k for every goal shape: worst "
        f"{worst[1]} {worst[0]:.1f}x: {_met(not misses)}"
    )
    return text + (f" (over: {', '.join(misses)})." if misses else ".")


def _q_goal(name: str, large: dict) -> str:
    qs = [_find(large, prefix) for prefix in ("q=dead", "q=garden")]
    figures = ", ".join(f"{n} {s['p50_ms']:.1f} ms" for n, s in qs)
    ok = all(s["p50_ms"] <= Q_GOAL_MS for _, s in qs)
    return f"{name}: `q` (3+ characters) p50 at 1M <= {Q_GOAL_MS:g} ms: {figures}: {_met(ok)}."


def _load_goal(name: str, small: dict, large: dict) -> str:
    a, b = load_ratio(small), load_ratio(large)
    ok = a >= LOAD_GOAL and b >= LOAD_GOAL
    return (
        f"{name}: first page under load >= {LOAD_GOAL}x the bare one-row reference: "
        f"{a:.2f}x at 10k, {b:.2f}x at 1M: {_met(ok)}."
    )


def markdown(info: dict, runs: list[dict]) -> str:
    prepare = "; ".join(
        f"{DB_NAMES[r['db']]} {size_label(r['size'])} "
        + ", ".join(f"{k} {v:.0f} s" for k, v in r["prepare_s"].items())
        for r in _columns(runs)
    )
    return "\n".join(
        [
            "# Bookshelf at scale",
            "",
            f"{info['finished']}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"the run took {info['elapsed_s']:,} s; commit {info['commit']}; schema revision "
            f"{', '.join(sorted({r['schema'] for r in runs}))}.",
            "",
            "Each cell: single-client p50 (ms, one keep-alive connection, up to 20 requests "
            f"after 3) / wrk req/s (32 connections, 2 threads, {info['duration_s']:g} s). "
            "One run: figures from a shared machine.",
            "",
            *table(runs),
            "",
            "## Goals (issue 15, point 5)",
            "",
            *[f"- {line}" for line in goals(runs)],
            "",
            f"Preparing each catalog (init-db, generate, analyze): {prepare}.",
            "",
        ]
    )


def write(results_dir: Path, info: dict, runs: list[dict]) -> Path:
    info = {"finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), **info}
    results_dir.mkdir(parents=True, exist_ok=True)
    md_path = results_dir / "scale.md"
    md_path.write_text(markdown(info, runs))
    (results_dir / "scale.json").write_text(
        json.dumps({"meta": info, "runs": runs}, indent=2) + "\n"
    )
    return md_path
