"""Loaders for the downstream data sets in `../shared/data` (see its SOURCES.md).

Secondary structure (per residue):
  * FLIP / NetSurfP-2.0 split (`secondary_structure/flip_netsurfp2_sampled`): 3-state labels, a
    resolved-residue mask, SET=train|test and VALIDATION=True|False in the label headers.
  * CB513, TS115, CASP12 (`secondary_structure/netsurfp2_prottrans_csv/*_HHblits.csv`): 3- and 8-state
    labels; `disorder` 0.0 marks unresolved residues, which are excluded. CB513 has 511 rows but 432
    distinct sequences (duplicates carry identical labels): we keep the first of each.
Localization (per protein, Light Attention protocol):
  * train `deeploc/deeploc1_train_reconstructed` (9,176), validation `deeploc/light_attention/
    deeploc_our_val_set.fasta` (Cytoplasm-Nucleus dropped), test `.../deeploc_test_set.fasta` (2,768).

Every record gets an id that is unique within its task, so one FASTA file (and one embedding h5) per
task holds every protein the task needs; `task_sequences` lists them.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from typing import Iterator

import numpy as np

# Label alphabets; the index in the string is the class id.
SS3_CLASSES = "HEC"
SS8_CLASSES = "GHIBESTC"  # paper order: helices (G H I), strands (B E), turn, bend, coil
LOCATIONS = (
    "Cell.membrane",
    "Cytoplasm",
    "Endoplasmic.reticulum",
    "Golgi.apparatus",
    "Lysosome/Vacuole",
    "Mitochondrion",
    "Nucleus",
    "Peroxisome",
    "Plastid",
    "Extracellular",
)
MEMBRANE_CLASSES = ("M", "S")  # Q2 is scored on proteins labelled M or S only; U is unknown
DROPPED_LOCATIONS = ("Cytoplasm-Nucleus",)  # only in LA's validation set

SS_CSV_SETS = ("CASP12", "TS115", "CB513")
SS_CSV_DIR = "secondary_structure/netsurfp2_prottrans_csv"
FLIP_DIR = "secondary_structure/flip_netsurfp2_sampled"
DEEPLOC_TRAIN = "deeploc/deeploc1_train_reconstructed/deeploc1_LA_train_reconstructed.fasta"
DEEPLOC_VAL = "deeploc/light_attention/deeploc_our_val_set.fasta"
DEEPLOC_TEST = "deeploc/light_attention/deeploc_test_set.fasta"


class DataFormatError(ValueError):
    """A downstream data file does not have the expected format (message names file and line)."""


@dataclasses.dataclass(frozen=True)
class ResidueRecord:
    """One protein with per-residue labels.

    Attributes:
      id: unique id within the task (also the FASTA / h5 key).
      sequence: residues, length L.
      labels: int32 [L] class ids (index into the label alphabet; 0 where masked).
      mask: bool [L], True where the residue is resolved (trained on and scored).
    """

    id: str
    sequence: str
    labels: np.ndarray
    mask: np.ndarray


@dataclasses.dataclass(frozen=True)
class ProteinRecord:
    """One protein with a localization and a membrane label (`M`, `S` or `U`)."""

    id: str
    sequence: str
    location: int  # index into LOCATIONS
    membrane: str


# ------------------------------------------------------------------------------------ FASTA


def read_labelled_fasta(path: pathlib.Path) -> Iterator[tuple[str, str, int]]:
    """Yields (header without '>', sequence, header line number) from a (possibly wrapped) FASTA file."""
    header, lineno, chunks = None, 0, []
    with open(path, encoding="ascii") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(chunks), lineno
                header, lineno, chunks = line[1:].strip(), n, []
            elif header is None:
                raise DataFormatError(f"{path}:{n}: sequence line before the first '>' header")
            else:
                chunks.append(line)
    if header is not None:
        yield header, "".join(chunks), lineno


def _encode_labels(path, lineno, labels: str, alphabet: str) -> np.ndarray:
    table = {c: i for i, c in enumerate(alphabet)}
    try:
        return np.fromiter((table[c] for c in labels), dtype=np.int32, count=len(labels))
    except KeyError as e:
        raise DataFormatError(f"{path}:{lineno}: label {e.args[0]!r} not in {alphabet!r}") from None


# ---------------------------------------------------------------------------- secondary structure


def load_flip(data_root: pathlib.Path) -> dict[str, list[ResidueRecord]]:
    """The FLIP/NetSurfP-2.0 3-state split.

    Returns:
      {"train": 9,712, "validation": 1,080, "NEW364": 364} lists of ResidueRecord (3-state labels).
    """
    base = pathlib.Path(data_root) / FLIP_DIR
    seqs = {h.split()[0]: s for h, s, _ in read_labelled_fasta(base / "sequences.fasta")}
    masks = {h.split()[0]: s for h, s, _ in read_labelled_fasta(base / "mask.fasta")}
    out: dict[str, list[ResidueRecord]] = {"train": [], "validation": [], "NEW364": []}
    path = base / "sampled.fasta"
    for header, labels, lineno in read_labelled_fasta(path):
        fields = header.split()
        pid, tags = fields[0], dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        if pid not in seqs or pid not in masks:
            raise DataFormatError(f"{path}:{lineno}: id {pid} missing from sequences.fasta or mask.fasta")
        seq, mask = seqs[pid], masks[pid]
        if not (len(seq) == len(labels) == len(mask)):
            raise DataFormatError(
                f"{path}:{lineno}: {pid}: sequence/labels/mask lengths differ ({len(seq)}/{len(labels)}/{len(mask)})"
            )
        if tags.get("SET") == "test":
            split = "NEW364"
        elif tags.get("SET") == "train":
            split = "validation" if tags.get("VALIDATION") == "True" else "train"
        else:
            raise DataFormatError(f"{path}:{lineno}: header lacks SET=train|test: {header!r}")
        m = np.frombuffer(mask.encode(), dtype=np.uint8) == ord("1")
        out[split].append(ResidueRecord(pid, seq, _encode_labels(path, lineno, labels, SS3_CLASSES), m))
    return out


def load_ss_csv(data_root: pathlib.Path, name: str, states: int) -> list[ResidueRecord]:
    """CB513 / TS115 / CASP12 with 3- or 8-state labels; duplicate sequences dropped (first kept).

    Ids are `{name}_{row:04d}` (row = 0-based data row of the CSV).
    """
    if name not in SS_CSV_SETS:
        raise ValueError(f"unknown secondary-structure set {name!r}; expected one of {SS_CSV_SETS}")
    if states not in (3, 8):
        raise ValueError(f"states must be 3 or 8, got {states}")
    path = pathlib.Path(data_root) / SS_CSV_DIR / f"{name}_HHblits.csv"
    alphabet, column = (SS3_CLASSES, 1) if states == 3 else (SS8_CLASSES, 2)
    records, seen = [], set()
    with open(path, encoding="ascii", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        if header[:4] != ["input", "dssp3", "dssp8", "disorder"]:
            raise DataFormatError(f"{path}:1: expected header 'input, dssp3, dssp8, disorder, ...', got {header}")
        for row_index, row in enumerate(reader):
            lineno = row_index + 2
            if len(row) < 4:
                raise DataFormatError(f"{path}:{lineno}: expected at least 4 columns, got {len(row)}")
            # Tokens are space separated; remove every space (some files glue two tokens together).
            seq, labels = "".join(row[0].split()), "".join(row[column].split())
            disorder = row[3].split()
            if not (len(seq) == len(labels) == len(disorder)):
                raise DataFormatError(f"{path}:{lineno}: input/dssp/disorder lengths differ")
            if seq in seen:
                continue
            seen.add(seq)
            mask = np.array([float(d) != 0.0 for d in disorder], dtype=bool)
            records.append(
                ResidueRecord(f"{name}_{row_index:04d}", seq, _encode_labels(path, lineno, labels, alphabet), mask)
            )
    return records


# ------------------------------------------------------------------------------------ localization


def read_deeploc_fasta(path: pathlib.Path, drop_locations=DROPPED_LOCATIONS) -> list[ProteinRecord]:
    """A Light-Attention style FASTA (`>ACC Location-M|S|U [flag]`)."""
    path = pathlib.Path(path)
    records = []
    for header, seq, lineno in read_labelled_fasta(path):
        fields = header.split()
        if len(fields) < 2 or "-" not in fields[1]:
            raise DataFormatError(f"{path}:{lineno}: expected '>ACC Location-M|S|U', got {header!r}")
        location, membrane = fields[1].rsplit("-", 1)
        if location in drop_locations:
            continue
        if location not in LOCATIONS:
            raise DataFormatError(f"{path}:{lineno}: unknown location {location!r}; expected one of {LOCATIONS}")
        if membrane not in ("M", "S", "U"):
            raise DataFormatError(f"{path}:{lineno}: membrane code {membrane!r} is not M, S or U")
        records.append(ProteinRecord(fields[0], seq, LOCATIONS.index(location), membrane))
    return records


def load_deeploc(data_root: pathlib.Path) -> dict[str, list[ProteinRecord]]:
    """{"train": 9,176, "validation": 1,655, "test": 2,768} DeepLoc 1.0 records."""
    root = pathlib.Path(data_root)
    return {
        "train": read_deeploc_fasta(root / DEEPLOC_TRAIN),
        "validation": read_deeploc_fasta(root / DEEPLOC_VAL),
        "test": read_deeploc_fasta(root / DEEPLOC_TEST),
    }


# ------------------------------------------------------------------------------------ per task


def load_secondary_structure(data_root: pathlib.Path) -> dict[str, list[ResidueRecord]]:
    """Every secondary-structure split, keyed `{split}/{states}`.

    Keys: `flip_train/3`, `flip_validation/3`, `NEW364/3`, and `{CASP12,TS115,CB513}/{3,8}`.
    """
    flip = load_flip(data_root)
    out = {"flip_train/3": flip["train"], "flip_validation/3": flip["validation"], "NEW364/3": flip["NEW364"]}
    for name in SS_CSV_SETS:
        for states in (3, 8):
            out[f"{name}/{states}"] = load_ss_csv(data_root, name, states)
    return out


def task_sequences(task: str, data_root: pathlib.Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(id, sequence) of every protein a task needs, each id once, in a fixed order.

    With `limit`, only the proteins a `--limit` run of the task uses (`subsample` of each split).
    """
    if task == "secondary_structure":
        groups = load_secondary_structure(data_root).values()
    elif task == "localization":
        groups = load_deeploc(data_root).values()
    else:
        raise ValueError(f"unknown task {task!r}; expected secondary_structure or localization")
    out: dict[str, str] = {}
    for records in groups:
        for r in subsample(records, limit):
            if out.setdefault(r.id, r.sequence) != r.sequence:
                raise DataFormatError(f"id {r.id} names two different sequences")
    return list(out.items())


def write_fasta(items: list[tuple[str, str]], path: pathlib.Path, width: int = 60) -> None:
    """Writes (id, sequence) pairs as FASTA, atomically (temp file + rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        for pid, seq in items:
            f.write(f">{pid}\n")
            for i in range(0, len(seq), width):
                f.write(seq[i : i + width] + "\n")
    tmp.replace(path)


def default_data_root() -> pathlib.Path:
    """`$PROTLM_DATA_ROOT`, else `../shared/data` beside the repository checkout."""
    env = os.environ.get("PROTLM_DATA_ROOT")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


def subsample(records: list, limit: int | None) -> list:
    """At most `limit` records, evenly spaced over the list (files are often sorted by class)."""
    if not limit or len(records) <= limit:
        return records
    idx = np.linspace(0, len(records) - 1, limit).round().astype(int)
    return [records[i] for i in idx]
