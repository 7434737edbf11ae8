"""``python -m protlm.demo --fasta FASTA --model_dir DIR``: what ``make demo`` runs.

The three jobs end to end on one FASTA file:

1. trains the quickstart model (``gin/quickstart.gin``: a small ProtT5 that learns on a CPU in
   minutes) into DIR (checkpoints, TensorBoard events, metrics);
2. exports it to a Hugging Face directory ``DIR/hf`` (``T5ForConditionalGeneration`` + tokenizer);
3. embeds the first ``--embed_num`` proteins of the FASTA into ``DIR/embeddings.h5``
   (per-protein means, one dataset per id).

Running it again resumes (or, when finished, just reports). Extra ``--gin.NAME=VALUE`` flags
are passed to the trainer, e.g. ``--gin.TRAIN_STEPS=100`` for a shorter run.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from protlm import cli


def run_demo(fasta: str, model_dir: str, gin_flags: list[str]) -> dict:
    """Train gin/quickstart.gin on ``fasta`` into ``model_dir``; returns the train result."""
    from protlm import train
    if not pathlib.Path(fasta).is_file():
        raise FileNotFoundError(f"--fasta {fasta}: no such file; install Debian's mmseqs2-examples "
                                "or pass any FASTA (.fasta or .fasta.gz)")
    argv = ["--gin_file=gin/quickstart.gin", f"--gin.MODEL_DIR={model_dir!r}",
            f"--gin.FASTA_PATTERN={fasta!r}", *gin_flags]
    return train.train(argv)


def export_and_embed(fasta: str, model_dir: str, embed_num: int) -> dict[str, str]:
    """Exports DIR to DIR/hf and embeds the first `embed_num` proteins of `fasta`."""
    import itertools
    import tempfile

    from protlm import embed
    from protlm.data import fasta as fasta_io
    from protlm.hf import export

    root = pathlib.Path(model_dir)
    hf_dir = export.export_checkpoint(root, root / "hf", overwrite=True)
    with tempfile.TemporaryDirectory() as tmp:
        sample = pathlib.Path(tmp) / "sample.fasta"
        with open(sample, "w") as f:
            for rec in itertools.islice(fasta_io.read_fasta(fasta), embed_num):
                f.write(f">{rec.id}\n{rec.sequence}\n")
        stats = embed.embed_fasta(root, sample, root / "embeddings.h5", per_residue=False,
                                  per_protein=True)
    return {"hf": str(hf_dir), "embeddings": str(root / "embeddings.h5"),
            "embed_rate": f"{stats['proteins']} proteins, {stats['residues_per_s']:.0f} residues/s"}


def report(model_dir: str, result: dict) -> str:
    """Human-readable summary of where the run's outputs are."""
    root = pathlib.Path(model_dir)
    lines = [f"status: {result.get('status')} at step {result.get('step')}",
             f"checkpoints:  {root / 'checkpoints'}",
             f"config:       {root / 'config.json'}",
             f"tensorboard:  tensorboard --logdir {root / 'tensorboard'}",
             f"metrics:      {root / 'metrics'}/{{train,eval}}.jsonl"]
    ev = result.get("eval") or {}
    if ev:
        lines.append("validation:   " + json.dumps({k: round(v, 4) for k, v in ev.items()}))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protlm.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", required=True, help="training FASTA (.fasta or .fasta.gz)")
    parser.add_argument("--model_dir", default="runs/quickstart")
    parser.add_argument("--embed_num", type=int, default=200,
                        help="proteins of FASTA to embed after training (0 = skip export and embed)")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    bad = [a for a in rest if not a.startswith("--gin.")]
    if bad:
        parser.error(f"unknown arguments {bad}; only --gin.NAME=VALUE may be added")
    result = run_demo(args.fasta, args.model_dir, rest)
    print(report(args.model_dir, result))
    if result.get("status") != "done":
        return 0 if result.get("status") == "preempted" else 1
    if args.embed_num > 0:
        outputs = export_and_embed(args.fasta, args.model_dir, args.embed_num)
        print("\n".join(f"{k + ':':13} {v}" for k, v in outputs.items()))
    return 0


if __name__ == "__main__":
    cli.run(main, "demo")
