"""`python -m protlm.downstream`: train the paper's probes on frozen features and score them.

Examples:
  # The FASTA of every protein a task needs, to embed:
  python -m protlm.downstream --task secondary_structure --write_fasta ss.fasta
  python -m protlm.embed --model runs/small --fasta ss.fasta --per_residue --output ss.h5
  # Probes on embeddings, or on a baseline encoding:
  python -m protlm.downstream --task secondary_structure --embeddings ss.h5 --output ss/results.json
  python -m protlm.downstream --task localization --encoding blosum62 --output loc_blosum/results.json

Writes results.json, results.md (Markdown table) and PNG plots (in `--plots_dir`, default beside the output).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
import time

from protlm import cli
from protlm.downstream import datasets, features, localization, report, secondary_structure

TASKS = {"secondary_structure": secondary_structure, "localization": localization}
log = logging.getLogger("protlm.downstream")


def evaluate(
    task: str,
    embeddings: list[str] | None = None,
    encoding: str | None = None,
    data_root: str | pathlib.Path | None = None,
    output: str | pathlib.Path | None = None,
    plots_dir: str | pathlib.Path | None = None,
    name: str | None = None,
    limit: int | None = None,
    **probe_overrides,
) -> dict:
    """Runs one task on one feature source; writes results.json + .md when `output` is given.

    Args:
      task: "secondary_structure" or "localization".
      embeddings: h5 files written by `protlm.embed` (per-residue for secondary structure; per-residue or
        per-protein for localization). Exclusive with `encoding`.
      encoding: "onehot" or "blosum62" baseline.
      data_root: shared data folder (default `datasets.default_data_root()`).
      output: results.json path; the Markdown table goes beside it with suffix .md.
      plots_dir: PNG folder (default `<output dir>/plots`; no plots without an output).
      name: the method's name in tables (default: the encoding or the model attribute of the h5).
      limit: first `limit` proteins of each split only (smoke tests).
      **probe_overrides: ProbeConfig fields (seed, max_epochs, patience, ...), None values ignored.

    Returns:
      The results dict.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    module = TASKS[task]
    root = pathlib.Path(data_root) if data_root else datasets.default_data_root()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist; pass --data_root or set PROTLM_DATA_ROOT")
    overrides = {k: v for k, v in probe_overrides.items() if v is not None}
    config = dataclasses.replace(module.DEFAULT_CONFIG, **overrides)
    if output and plots_dir is None:
        plots_dir = pathlib.Path(output).parent / "plots"
    source = features.open_features(embeddings, encoding)
    try:
        t0 = time.time()
        results = module.run(source, root, config=config, limit=limit, plots_dir=plots_dir)
        results.update(
            task=task,
            name=name or encoding or str(source.description.get("model", "embeddings")),
            features=source.description,
            probe=dataclasses.asdict(config),
            limit=limit,
            runtime_s=time.time() - t0,
        )
    finally:
        source.close()
    if output:
        out = pathlib.Path(output)
        report.write_json(out, results)
        report.write_text(out.with_suffix(".md"), report.run_table(results))
        log.info("wrote %s and %s", out, out.with_suffix(".md"))
    return results


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m protlm.downstream", description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--embeddings", nargs="+", help="h5 file(s) written by protlm.embed")
    src.add_argument("--encoding", choices=("onehot", "blosum62"), help="baseline residue encoding")
    p.add_argument("--output", help="results.json path (results.md and plots/ go beside it)")
    p.add_argument("--write_fasta", help="write the FASTA of every protein the task needs to this path and exit")
    p.add_argument("--data_root", default=None, help="shared data folder (default ../shared/data beside the repo)")
    p.add_argument("--plots_dir", default=None)
    p.add_argument("--name", default=None, help="method name in the tables")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max_epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="first N proteins of each split only (smoke test)")
    args = p.parse_args(argv)
    if not args.write_fasta and not (args.embeddings or args.encoding):
        p.error("give --embeddings or --encoding (or --write_fasta)")
    if not args.write_fasta and not args.output:
        p.error("--output is required")
    return args


def main(argv=None) -> int:
    cli.setup_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    root = pathlib.Path(args.data_root) if args.data_root else datasets.default_data_root()
    if args.write_fasta:
        items = datasets.task_sequences(args.task, root, args.limit)
        datasets.write_fasta(items, pathlib.Path(args.write_fasta))
        log.info("wrote %d proteins (%d residues) to %s", len(items), sum(len(s) for _, s in items), args.write_fasta)
        return 0
    results = evaluate(
        args.task, args.embeddings, args.encoding, root, args.output, args.plots_dir, args.name, args.limit,
        seed=args.seed, max_epochs=args.max_epochs, patience=args.patience,
    )
    print(report.run_table(results))
    return 0
