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
    ("non-2xx", "r"),
    ("sock err", "r"),
    ("other CPU", "r"),
)


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
        str(row["non_2xx_3xx"]) if "non_2xx_3xx" in row else "-",
        str(row["socket_errors"]) if "socket_errors" in row else "-",
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
