"""The results table: on stdout, as Markdown (bench/results/latest.md) and as JSON (.json)."""

import json
import math
from pathlib import Path

COLUMNS = (
    ("row", "l"),
    ("db", "l"),
    ("conns", "r"),
    ("req/s", "r"),
    ("p50 ms", "r"),
    ("p99 ms", "r"),
    ("idle RSS MiB", "r"),
    ("load RSS MiB", "r"),
    ("x ref (c)", "r"),
    ("x 1 proc", "r"),
    ("non-2xx", "r"),
    ("sock err", "r"),
    ("new conn/s", "r"),
    ("other CPU", "r"),
)
# Issue 13's goals, measured by the scale-out rows and the PostgreSQL rows.
SCALE_GOAL = 1.7  # 2 processes behind nginx over 1, GET /api/v1/books/{id} on PostgreSQL


def _num(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _mib(kib) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def cells(row: dict) -> list[str]:
    if row["status"] != "ok":
        blank = ["-"] * (len(COLUMNS) - 3)
        return [row["label"], row["db"], str(row.get("connections", "-")), *blank]
    rps = row["requests_per_s"]
    return [
        row["label"],
        row["db"],
        str(row["connections"]) if row.get("connections") else "-",
        _num(rps, 1 if rps < 100 else 0),
        _num(row.get("p50_ms"), 2),
        _num(row.get("p99_ms"), 2),
        _mib(row.get("idle_rss_kib")),
        _mib(row.get("load_rss_kib")),
        _num(row.get("ratio"), 2),
        _num(row.get("scale_ratio"), 2),
        str(row["non_2xx_3xx"]) if "non_2xx_3xx" in row else "-",
        str(row["socket_errors"]) if "socket_errors" in row else "-",
        _num(row.get("new_connections_per_s"), 2),
        _num(row.get("other_cores"), 2),
    ]


def markdown_table(rows: list[dict]) -> str:
    header = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---:" if align == "r" else "---" for _, align in COLUMNS) + "|"
    body = ["| " + " | ".join(cells(row)) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def notes(rows: list[dict]) -> list[str]:
    """What each row measured, and why a row has no numbers."""
    lines = []
    for row in rows:
        text = row["what"]
        if row.get("note"):
            text += f" {row['note']}"
        if row["status"] != "ok":
            text += f" **{row['status'].upper()}**: {row['reason']}"
        lines.append(f"- `{row['label']}`: {text}")
    return lines


def goals(rows: list[dict]) -> list[str]:
    """One line per goal of issue 13: what this run measured, and whether it is met."""
    measured = [r for r in rows if r["status"] == "ok"]
    return [*_scale_goal(measured), _connections_goal(measured)]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _scale_goal(rows: list[dict]) -> list[str]:
    head = f"Scale-out, goal >= {SCALE_GOAL}x"
    scale = [r for r in rows if r.get("scale_ratio") is not None]
    if not scale:
        return [f"{head}: not measured (row scale-2proc-nginx@pg, BENCH_DATABASE_URL)."]
    return [
        f"{head}: `{r['label']}` is {r['scale_ratio']:.2f}x one process (x 1 proc): "
        f"{_met(r['scale_ratio'] >= SCALE_GOAL)}."
        for r in scale
    ]


def _connections_goal(rows: list[dict]) -> str:
    head = "New PostgreSQL connections under steady load with the default pool, goal 0/s"
    counted = [r for r in rows if r.get("new_connections_per_s") is not None]
    if not counted:
        return f"{head}: not measured (PostgreSQL rows, BENCH_DATABASE_URL)."
    opened = sum(r["new_connections"] for r in counted)
    worst = max(counted, key=lambda r: r["new_connections_per_s"])
    where = (
        f", most in `{worst['label']}` ({worst['new_connections_per_s']:.2f}/s)" if opened else ""
    )
    return (
        f"{head}: {opened} opened in the measured rounds of {len(counted)} PostgreSQL row(s)"
        f"{where}: {_met(not opened)}."
    )


def markdown(meta: dict, rows: list[dict]) -> str:
    parts = [
        "# Bookshelf benchmark",
        "",
        f"{meta['finished']}, {meta['machine']}; {meta['wrk']}; {meta['versions']}.",
        "",
        f"wrk: {meta['method']}",
        "",
        markdown_table(rows),
        "",
        "## Goals (issue 13)",
        "",
        *[f"- {line}" for line in goals(rows)],
        "",
        "## Rows",
        "",
        *notes(rows),
        "",
        "## Method",
        "",
        *[f"- {line}" for line in meta["notes"]],
        "",
    ]
    return "\n".join(parts)


def write(results_dir: Path, meta: dict, rows: list[dict]) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    md_path = results_dir / "latest.md"
    json_path = results_dir / "latest.json"
    md_path.write_text(markdown(meta, rows))
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    return md_path, json_path
