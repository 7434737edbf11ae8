"""results.json and Markdown tables (one run, or several methods side by side), written atomically."""
from __future__ import annotations

import json
import os
import pathlib

from protlm.downstream.metrics import format_metric

# (metric, test set, column header) in the order of the paper's table.
COLUMNS = (
    ("q3", "CASP12", "Q3 CASP12"),
    ("q3", "TS115", "Q3 TS115"),
    ("q3", "CB513", "Q3 CB513"),
    ("q3", "NEW364", "Q3 NEW364"),
    ("q8", "CASP12", "Q8 CASP12*"),
    ("q8", "TS115", "Q8 TS115*"),
    ("q8", "CB513", "Q8 CB513 (CV)*"),
    ("q10", "DeepLoc", "Q10"),
    ("q2", "DeepLoc", "Q2"),
)
FOOTNOTE = (
    "Accuracy in % with bootstrap 95 % CI over proteins (1,000 resamples). "
    "*Q8 deviates from the paper (no 8-state training labels available): CASP12/TS115 from a probe trained "
    "on CB513, CB513 by 5-fold cross-validation over its 432 distinct proteins."
)


def write_text(path: pathlib.Path, text: str) -> pathlib.Path:
    """Writes `text` to a temporary name beside `path`, then renames it into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: pathlib.Path, obj) -> pathlib.Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def run_table(results: dict) -> str:
    """Markdown for one `python -m protlm.downstream` run: one row per (metric, test set)."""
    lines = [
        f"### {results.get('task', '')}: {results.get('name', '')}",
        "",
        "| metric | test set | accuracy % [95 % CI] | proteins | scored | protocol |",
        "|---|---|---|---|---|---|",
    ]
    for metric in ("q3", "q8", "q10", "q2"):
        for test_set, m in results.get(metric, {}).items():
            lines.append(
                f"| {metric.upper()} | {test_set} | {format_metric(m)} | {m['n_proteins']} | {m['n_scored']} "
                f"| {m.get('protocol', '')} |"
            )
    lines += ["", f"Runtime {results.get('runtime_s', 0.0):.0f} s."]
    if results.get("deviations"):
        lines += ["", "Deviations from the paper:"] + [f"- {d}" for d in results["deviations"]]
    return "\n".join(lines) + "\n"


def combined_table(rows: dict[str, list[dict]]) -> str:
    """One row per method (name -> its task results), one column per (metric, test set)."""
    header = "| method | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [header, "|---|" + "---|" * len(COLUMNS)]
    for name, results in rows.items():
        cells = []
        for metric, test_set, _ in COLUMNS:
            m = next((r[metric][test_set] for r in results if test_set in r.get(metric, {})), None)
            cells.append(format_metric(m) if m else "n/a")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + FOOTNOTE + "\n"
