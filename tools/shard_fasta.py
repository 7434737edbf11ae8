"""Split large FASTA input into N gzip shards with a deterministic train/validation split.

One streaming pass over the input (any glob/list the protlm reader takes, local or gs://):
  * every record goes to `train` or `validation` by a hash of its id (`protlm.data.splits`, the same
    rule the seqio tasks use when no validation files are given) and to shard hash(id) % N;
  * `--dedup` drops exact duplicate sequences (first occurrence kept; memory ~80 bytes per unique
    sequence, i.e. ~4 GB for UniRef50's 45 M records);
  * `--exclude` drops every sequence identical to one in the given FASTA or CSV files (test-set
    contamination), e.g. the NetSurfP CSVs (column `input`, space-separated residues are accepted).
Sequences are compared after upper-casing and removing whitespace and a trailing '*'.

Output (written under temporary names, renamed only when the whole pass succeeded):
  OUT/{prefix}train-00000-of-000NN.fasta.gz ... , OUT/{prefix}validation-00000-of-000MM.fasta.gz ...
  OUT/{prefix}shard_report.json (counts). Empty shards are not written (listed in the report).

  python tools/shard_fasta.py --input 'uniref50/*.fasta.gz' --output_dir shards --num_shards 256 \
      --dedup --exclude netsurfp/CB513_HHblits.csv --exclude deeploc_test.fasta
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import sys
from typing import Iterable, Sequence

from tqdm import tqdm

from protlm.data import splits
from protlm.data.fasta import FastaFormatError, expand_paths, open_binary, read_fasta


def sequence_key(seq: str) -> bytes:
    """Compact identity key of a normalised sequence (16-byte BLAKE2b)."""
    return hashlib.blake2b("".join(seq.split()).upper().rstrip("*").encode("ascii", "replace"), digest_size=16).digest()


def _csv_sequences(path: str, column: str) -> Iterable[str]:
    with open_binary(path) as fh:
        reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"), skipinitialspace=True)
        names = [n.strip() for n in (reader.fieldnames or [])]
        if column not in names:
            raise ValueError(f"{path}: no column {column!r} (columns: {names}); pass --exclude_csv_column")
        reader.fieldnames = names
        for row in reader:
            if row[column]:
                yield row[column]


def load_exclusions(paths: Sequence[str], csv_column: str = "input") -> set[bytes]:
    """Sequence keys of every sequence in the exclusion files (.csv[.gz] by column, else FASTA)."""
    keys: set[bytes] = set()
    for pattern in paths:
        for path in expand_paths(pattern):
            is_csv = path.endswith((".csv", ".csv.gz", ".tsv"))
            seqs = _csv_sequences(path, csv_column) if is_csv else (r.sequence for r in read_fasta(path))
            keys.update(sequence_key(s) for s in seqs)
    return keys


def _wrap(seq: str, width: int) -> str:
    if width <= 0:
        return seq + "\n"
    return "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))


class _ShardWriter:
    """Lazily opened gzip shards under temporary names; `commit` renames, `abort` deletes."""

    def __init__(self, out_dir: str, prefix: str, split: str, num_shards: int, compresslevel: int):
        self.final = [os.path.join(out_dir, f"{prefix}{split}-{i:05d}-of-{num_shards:05d}.fasta.gz")
                      for i in range(num_shards)]
        self.tmp = [os.path.join(out_dir, f".tmp.{os.getpid()}.{os.path.basename(p)}") for p in self.final]
        self.files: dict[int, gzip.GzipFile] = {}
        self.records = [0] * num_shards
        self.residues = [0] * num_shards
        self.level = compresslevel

    def write(self, shard: int, text: str, residues: int) -> None:
        fh = self.files.get(shard)
        if fh is None:
            fh = self.files[shard] = gzip.open(self.tmp[shard], "wt", compresslevel=self.level, encoding="utf-8")
        fh.write(text)
        self.records[shard] += 1
        self.residues[shard] += residues

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()

    def commit(self) -> list[str]:
        self.close()
        written = []
        for i in sorted(self.files):
            os.replace(self.tmp[i], self.final[i])
            written.append(self.final[i])
        return written

    def abort(self) -> None:
        self.close()
        for i in self.files:
            if os.path.exists(self.tmp[i]):
                os.remove(self.tmp[i])


def shard_fasta(
    inputs: Sequence[str],
    output_dir: str,
    num_shards: int,
    num_validation_shards: int = 1,
    validation_fraction: float = splits.DEFAULT_VALIDATION_FRACTION,
    dedup: bool = False,
    exclude: Sequence[str] = (),
    exclude_csv_column: str = "input",
    prefix: str = "",
    line_width: int = 80,
    compresslevel: int = 6,
    progress: bool = True,
) -> dict:
    """Runs the split; returns the report (also written to OUT/{prefix}shard_report.json)."""
    if num_shards < 1 or num_validation_shards < 1:
        raise ValueError("--num_shards and --num_validation_shards must be >= 1")
    os.makedirs(output_dir, exist_ok=True)
    excluded_keys = load_exclusions(exclude, exclude_csv_column) if exclude else set()
    seen: set[bytes] = set()
    writers = {
        "train": _ShardWriter(output_dir, prefix, "train", num_shards, compresslevel),
        "validation": _ShardWriter(output_dir, prefix, "validation", num_validation_shards, compresslevel),
    }
    counts = {"records_read": 0, "residues_read": 0, "duplicates_removed": 0, "excluded_removed": 0}
    try:
        bar = tqdm(read_fasta(list(inputs)), unit=" rec", disable=not progress, mininterval=2.0, file=sys.stderr)
        for rec in bar:
            counts["records_read"] += 1
            counts["residues_read"] += len(rec.sequence)
            if excluded_keys or dedup:
                key = sequence_key(rec.sequence)
                if key in excluded_keys:
                    counts["excluded_removed"] += 1
                    continue
                if dedup:
                    if key in seen:
                        counts["duplicates_removed"] += 1
                        continue
                    seen.add(key)
            split = splits.split_of(rec.id, validation_fraction)
            writer = writers[split]
            header = f">{rec.id} {rec.description}".rstrip()
            writer.write(splits.shard_of(rec.id, len(writer.records)), header + "\n" + _wrap(rec.sequence, line_width),
                         len(rec.sequence))
        written = {s: w.commit() for s, w in writers.items()}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    report = dict(counts)
    for split, w in writers.items():
        report[split] = {
            "records": sum(w.records),
            "residues": sum(w.residues),
            "files": [os.path.basename(p) for p in written[split]],
            "records_per_shard": w.records,
            "empty_shards_not_written": [i for i, n in enumerate(w.records) if n == 0],
        }
    report["config"] = {"num_shards": num_shards, "num_validation_shards": num_validation_shards,
                        "validation_fraction": validation_fraction, "dedup": dedup, "exclude": list(exclude)}
    path = os.path.join(output_dir, f"{prefix}shard_report.json")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    os.replace(path + ".tmp", path)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", action="append", required=True, help="FASTA file/glob (repeatable)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_shards", type=int, required=True)
    parser.add_argument("--num_validation_shards", type=int, default=1)
    parser.add_argument("--validation_fraction", type=float, default=splits.DEFAULT_VALIDATION_FRACTION)
    parser.add_argument("--dedup", action="store_true", help="drop exact duplicate sequences")
    parser.add_argument("--exclude", action="append", default=[], help="FASTA/CSV whose sequences to drop (repeatable)")
    parser.add_argument("--exclude_csv_column", default="input")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--line_width", type=int, default=80)
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = shard_fasta(args.input, args.output_dir, args.num_shards, args.num_validation_shards,
                             args.validation_fraction, args.dedup, args.exclude, args.exclude_csv_column,
                             args.prefix, args.line_width, progress=not args.no_progress)
    except (FastaFormatError, FileNotFoundError, ValueError) as e:
        sys.exit(f"shard_fasta: {e}")
    summary = {k: v for k, v in report.items() if k not in ("train", "validation")}
    for split in ("train", "validation"):
        summary[split] = {k: report[split][k] for k in ("records", "residues", "empty_shards_not_written")}
        summary[split]["files"] = len(report[split]["files"])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
