"""Evaluation-set exclusion inputs: sequences to drop exactly, and ids to drop by identity.

Exact exclusion reads evaluation sets as FASTA (any form `protlm.data.fasta` reads) or CSV
(`.csv`, `.csv.gz`, `.tsv`: one column of sequences, e.g. the NetSurfP-2.0 `input` column, whose
space-separated residues are accepted). Sequences are compared by `splits.sequence_key`.

Exclusion by an identity threshold takes the output of an external search tool rather than
re-implementing alignment: BLAST/MMseqs2 tabular hits (`-outfmt 6` / `.m8`), one hit per line,
tab-separated: column 1 the training record id (query), column 2 the evaluation id (target),
column 3 the sequence identity, as a fraction (MMseqs2 `fident`) or in percent (BLAST `pident`;
any value above 1 is read as percent). For example:

    mmseqs easy-search train.fasta eval.fasta hits.m8 tmp --min-seq-id 0.3
    python tools/shard_fasta.py ... --exclude_hits hits.m8 --exclude_min_identity 0.3
"""
from __future__ import annotations

import csv
import io
from typing import Iterator

from protlm.data.fasta import open_binary, read_fasta

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


class ExclusionFormatError(ValueError):
    """An exclusion input is malformed; the message names the file (and line) and the fix."""


def _csv_sequences(path: str, column: str) -> Iterator[str]:
    delimiter = "\t" if ".tsv" in path else ","
    with open_binary(path) as fh:
        reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"), delimiter=delimiter,
                                skipinitialspace=True)
        names = [n.strip() for n in (reader.fieldnames or [])]
        if column not in names:
            raise ExclusionFormatError(f"{path}: no column {column!r} (columns: {names}); "
                             "pass --exclude_csv_column with the sequence column")
        reader.fieldnames = names
        for row in reader:
            if row[column]:
                yield row[column]


def evaluation_sequences(path: str, csv_column: str = "input") -> Iterator[str]:
    """Every sequence of one evaluation-set file (CSV by column, else FASTA)."""
    if path.endswith(CSV_SUFFIXES):
        yield from _csv_sequences(path, csv_column)
    else:
        yield from (r.sequence for r in read_fasta(path))


def identity_hits(path: str, min_identity: float) -> Iterator[str]:
    """Training record ids (column 1) of the hits in `path` with identity >= `min_identity`.

    Raises:
      ExclusionFormatError: a line with fewer than 3 columns or a non-numeric identity (names file and line).
    """
    if not 0.0 <= min_identity <= 1.0:
        raise ValueError(f"identity threshold must be a fraction in [0, 1], got {min_identity}")
    with open_binary(path) as fh:
        for line_no, raw in enumerate(io.TextIOWrapper(fh, encoding="utf-8"), 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            try:
                identity = float(cols[2])
            except (IndexError, ValueError):
                raise ExclusionFormatError(
                    f"{path}:{line_no}: not a tabular hit line (query<TAB>target<TAB>identity...): "
                    f"{line[:60]!r}. Fix: write the hits with `mmseqs easy-search` / `blastp -outfmt 6`"
                ) from None
            if identity > 1.0:
                identity /= 100.0
            if identity >= min_identity:
                yield cols[0]
