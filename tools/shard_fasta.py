"""Shard FASTA into train/validation TFRecord shards with Apache Beam: split, dedup, exclusion.

Runs `protlm.data.shard_pipeline` (the one implementation of the corpus rules in
`protlm.data.splits`): every record goes to `train` or `validation` by a hash of its id (the rule the
seqio tasks use) and to shard hash(id) % N; `--dedup` drops exact duplicate sequences with a
GroupByKey (first occurrence in input order kept); `--exclude` drops every sequence identical to one
of the given evaluation sets (FASTA or CSV, e.g. the NetSurfP CSVs, column `input`); `--exclude_hits`
drops records that a search tool (MMseqs2 / BLAST tabular output) found at `--exclude_min_identity`
or more identity to an evaluation sequence.

Local (DirectRunner; `--direct_num_workers=2 --direct_running_mode=multi_processing` uses 2 cores):
  python tools/shard_fasta.py --input 'uniref50/*.fasta.gz' --output_dir shards --num_shards 256 \
      --dedup --exclude netsurfp/CB513_HHblits.csv --exclude deeploc_test.fasta
A cluster: any further flag is a Beam pipeline option, e.g.
  python tools/shard_fasta.py --input 'gs://b/bfd/*.fa.gz' --output_dir gs://b/bfd_shards --num_shards 8192 \
      --dedup --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp \
      --setup_file=./setup.py

Output: OUT/train-00000-of-00256.tfrecord ..., OUT/validation-00000-of-00001.tfrecord,
OUT/shard_report.json. Train on it with --gin.FASTA_PATTERN="'OUT'". A non-empty OUT is refused
unless --overwrite (the old shards are replaced only once the new ones are complete).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys


def parse_args(argv):
    from protlm.data import splits  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Unknown flags are passed to Beam as pipeline options.")
    parser.add_argument("--input", action="append", required=True, help="FASTA file/glob (repeatable)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_shards", type=int, required=True)
    parser.add_argument("--num_validation_shards", type=int, default=1)
    parser.add_argument("--validation_fraction", type=float, default=splits.DEFAULT_VALIDATION_FRACTION)
    parser.add_argument("--dedup", action="store_true", help="drop exact duplicate sequences")
    parser.add_argument("--exclude", action="append", default=[],
                        help="evaluation-set FASTA/CSV whose sequences to drop (repeatable)")
    parser.add_argument("--exclude_csv_column", default="input")
    parser.add_argument("--exclude_hits", action="append", default=[],
                        help="tabular search hits (query = training id, 3rd column identity) (repeatable)")
    parser.add_argument("--exclude_min_identity", type=float, default=0.0,
                        help="drop records with a hit of at least this identity (fraction)")
    parser.add_argument("--overwrite", action="store_true", help="replace the shards of a non-empty --output_dir")
    return parser.parse_known_args(argv)


def main(argv=None) -> None:
    args, pipeline_args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    from protlm.data import exclusions, shard_pipeline  # pylint: disable=import-outside-toplevel
    from protlm.data.fasta import FastaFormatError  # pylint: disable=import-outside-toplevel

    config = shard_pipeline.ShardConfig(
        inputs=tuple(args.input), output_dir=args.output_dir, num_shards=args.num_shards,
        num_validation_shards=args.num_validation_shards, validation_fraction=args.validation_fraction,
        dedup=args.dedup, exclude=tuple(args.exclude), exclude_csv_column=args.exclude_csv_column,
        exclude_hits=tuple(args.exclude_hits), exclude_min_identity=args.exclude_min_identity,
        overwrite=args.overwrite)
    try:
        report = shard_pipeline.run(config, pipeline_args)
    except (FastaFormatError, exclusions.ExclusionFormatError, FileNotFoundError, FileExistsError,
            ValueError) as e:
        sys.exit(f"shard_fasta: {e}")
    summary = {k: v for k, v in report.items() if k not in ("train", "validation", "config")}
    for split in ("train", "validation"):
        summary[split] = {k: report[split][k] for k in ("records", "residues", "empty_shards_not_written")}
        summary[split]["files"] = len(report[split]["files"])
    print(json.dumps(summary, indent=1))
    print(shard_pipeline.summary_line(report), file=sys.stderr)


if __name__ == "__main__":
    main()
