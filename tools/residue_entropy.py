"""Unigram entropy of the residues of a pretraining split: the loss of the best context-free guess.

A masked-LM (or span-denoising) model has learned something beyond residue frequencies once its
validation masked-residue loss is below this number. Residues are counted as the models see them
(rare residues U Z O B mapped to X, as the tasks do); the split is the tasks' own: a separate
validation FASTA, or the 1 % hash-of-id held-out split of the train files (`protlm.data.splits`).

    python tools/residue_entropy.py                                   # shared corpus, validation
    python tools/residue_entropy.py --fasta_pattern 'DB.fasta.gz' --split train --json

Prints a summary line (or one JSON record with --json): records, residues, entropy in nats.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import sys

from protlm.data import splits, tokens
from protlm.data.fasta import expand_paths, read_fasta


def residue_counts(pattern: str, split: str = "validation",
                   fraction: float = splits.DEFAULT_VALIDATION_FRACTION,
                   split_by_hash: bool = True) -> tuple[collections.Counter, int]:
    """Counts of each residue (rare residues as X) over the records of `split`.

    Args:
      pattern: FASTA glob / comma list.
      split: "validation" or "train" of the hash held-out split (ignored without `split_by_hash`).
      fraction: size of the held-out split.
      split_by_hash: False reads every record (a separate validation FASTA).

    Returns:
      (Counter {residue: count}, number of records).
    """
    counts: collections.Counter = collections.Counter()
    records = 0
    for path in expand_paths(pattern):
        for rec in read_fasta(path):
            if split_by_hash and splits.split_of(rec.id, fraction) != split:
                continue
            records += 1
            counts.update(tokens.RARE_RESIDUE_MAP.get(c, c) for c in rec.sequence.upper())
    return counts, records


def entropy_nats(counts: collections.Counter) -> float:
    """Shannon entropy (nats) of the empirical distribution `counts`."""
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no residues counted: the split is empty")
    return -sum(n / total * math.log(n / total) for n in counts.values() if n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fasta_pattern", default=None,
                   help="FASTA glob (default: $PROTLM_FASTA_PATTERN or the shared corpus)")
    p.add_argument("--validation_fasta_pattern", default=None,
                   help="a separate validation FASTA: every record of it is counted")
    p.add_argument("--split", choices=("validation", "train"), default="validation")
    p.add_argument("--validation_fraction", type=float, default=splits.DEFAULT_VALIDATION_FRACTION)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.validation_fasta_pattern and args.split == "validation":
        pattern, by_hash = args.validation_fasta_pattern, False
    else:
        import os  # noqa: PLC0415

        from protlm.data.tasks import default_corpus_pattern  # noqa: PLC0415

        pattern = args.fasta_pattern or os.environ.get("PROTLM_FASTA_PATTERN") or \
            default_corpus_pattern()
        by_hash = True
    counts, records = residue_counts(pattern, args.split, args.validation_fraction, by_hash)
    result = {"pattern": pattern, "split": args.split, "records": records,
              "residues": int(sum(counts.values())), "entropy_nats": entropy_nats(counts)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{pattern} ({args.split}): {records} records, {result['residues']} residues, "
              f"unigram entropy {result['entropy_nats']:.4f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())
