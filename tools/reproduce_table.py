"""Reproduce the paper's downstream table: one-hot and BLOSUM62 baselines plus protlm model(s).

For each model: write the FASTA of every protein each task needs, embed it with `protlm.embed`
(per-residue for secondary structure, per-protein for localization; resumable), train and score the
probes with `protlm.downstream`, then write one combined Markdown table and JSON.

Example:
  python tools/reproduce_table.py --work_dir runs/table                       # baselines only
  python tools/reproduce_table.py --work_dir runs/table --model runs/prot_t5_small --dtype float16

Layout of --work_dir:
  fasta/{secondary_structure,localization}.fasta
  <method>/{secondary_structure,localization}.h5     (models only)
  <method>/<task>/results.json, results.md, plots/*.png
  table.md, table.json                               (combined)
Finished (method, task) results are reused on a rerun; pass --force to recompute them.
"""
from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

from protlm.downstream import datasets, main as downstream, report

TASKS = ("secondary_structure", "localization")
REPRESENTATION = {"secondary_structure": "per_residue", "localization": "per_protein"}
log = logging.getLogger("reproduce_table")


def _task_fasta(work_dir: pathlib.Path, task: str, data_root: pathlib.Path, limit: int | None) -> pathlib.Path:
    path = work_dir / "fasta" / (f"{task}.limit{limit}.fasta" if limit else f"{task}.fasta")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.write_fasta(datasets.task_sequences(task, data_root, limit), path)
    return path


def _evaluate(method_dir: pathlib.Path, task: str, force: bool, **kwargs) -> dict:
    out = method_dir / task / "results.json"
    if out.exists() and not force:
        log.info("reusing %s", out)
        return json.loads(out.read_text())
    return downstream.evaluate(task, output=out, **kwargs)


def reproduce(
    work_dir: pathlib.Path,
    models: list[str],
    names: list[str] | None = None,
    baselines: tuple[str, ...] = ("onehot", "blosum62"),
    data_root: pathlib.Path | None = None,
    dtype: str = "float32",
    max_tokens_per_batch: int = 8192,
    limit: int | None = None,
    force: bool = False,
    **probe_overrides,
) -> dict:
    """Runs every (method, task) and writes `table.md` / `table.json` in `work_dir`.

    Returns:
      {"rows": {method: [task results]}, "timings": {method: {step: seconds}}}.
    """
    from protlm import embed  # pylint: disable=import-outside-toplevel

    work_dir = pathlib.Path(work_dir)
    root = pathlib.Path(data_root) if data_root else datasets.default_data_root()
    names = names or [pathlib.Path(m).name for m in models]
    if len(names) != len(models) or len(set(names) | set(baselines)) != len(names) + len(baselines):
        raise ValueError(f"need one distinct --name per --model (and none equal to a baseline): {names}")
    rows: dict[str, list[dict]] = {}
    timings: dict[str, dict] = {}
    common = dict(data_root=root, limit=limit, **probe_overrides)
    for enc in baselines:
        timings[enc] = {}
        rows[enc] = []
        for task in TASKS:
            t0 = time.time()
            rows[enc].append(_evaluate(work_dir / enc, task, force, encoding=enc, name=enc, **common))
            timings[enc][task] = time.time() - t0
    for model, name in zip(models, names):
        timings[name] = {}
        rows[name] = []
        loaded = None
        for task in TASKS:
            h5 = work_dir / name / f"{task}.h5"
            t0 = time.time()
            loaded = loaded or embed.load_model(model, dtype)
            rep = REPRESENTATION[task]
            stats = embed.embed_fasta(model, _task_fasta(work_dir, task, root, limit), h5,
                                      per_residue=rep == "per_residue", per_protein=rep == "per_protein",
                                      max_tokens_per_batch=max_tokens_per_batch, loaded=loaded)
            timings[name][f"embed_{task}"] = time.time() - t0
            timings[name][f"embed_{task}_residues_per_s"] = stats["residues_per_s"]
            t0 = time.time()
            rows[name].append(_evaluate(work_dir / name, task, force, embeddings=[str(h5)], name=name, **common))
            timings[name][task] = time.time() - t0
    table = report.combined_table(rows)
    lines = ["# Downstream evaluation (protlm)", "", table, "", "Runtime (s) per method and step:", ""]
    for method, t in timings.items():
        lines.append(f"- {method}: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    report.write_text(work_dir / "table.md", "\n".join(lines) + "\n")
    report.write_json(work_dir / "table.json", {"rows": rows, "timings": timings, "limit": limit})
    log.info("wrote %s", work_dir / "table.md")
    return {"rows": rows, "timings": timings, "table": table}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work_dir", required=True)
    p.add_argument("--model", action="append", default=[], help="protlm or HF model directory (repeatable)")
    p.add_argument("--name", action="append", default=None, help="table name of each --model (repeatable)")
    p.add_argument("--baselines", nargs="*", default=["onehot", "blosum62"], choices=["onehot", "blosum62"])
    p.add_argument("--data_root", default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--max_tokens_per_batch", type=int, default=8192)
    p.add_argument("--limit", type=int, default=None, help="first N proteins per split (smoke runs)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--force", action="store_true", help="recompute finished results")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    out = reproduce(pathlib.Path(args.work_dir), args.model, args.name, tuple(args.baselines), args.data_root,
                    args.dtype, args.max_tokens_per_batch, args.limit, args.force, seed=args.seed)
    print(out["table"])
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
