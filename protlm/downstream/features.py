"""Where a probe's input features come from: an embedding h5 (written by `protlm.embed`) or a baseline
residue encoding (one-hot, BLOSUM62).

Both give per-residue features [L, d] and per-protein features [d] (mean over residues) for a
(id, sequence) pair, so the probes do not care which one they are fed.
"""
from __future__ import annotations

import pathlib

import h5py
import numpy as np

from protlm.downstream import encodings


def sanitize_id(protein_id: str) -> str:
    """The h5 dataset name of a FASTA id (as the ProtTrans embedder: '/' and '.' -> '_')."""
    return protein_id.replace("/", "_").replace(".", "_")


class FeatureError(ValueError):
    """Embeddings missing or inconsistent with the data set (message says which id and file)."""


class EncodingFeatures:
    """Baseline features computed from the sequence alone."""

    def __init__(self, name: str):
        if name not in encodings.ENCODINGS:
            raise ValueError(f"unknown encoding {name!r}; expected one of {encodings.ENCODINGS}")
        self.name = name
        self.description = {"kind": "encoding", "encoding": name}

    def residue(self, protein_id: str, sequence: str) -> np.ndarray:
        """float32 [L, d]."""
        return encodings.encode(self.name, sequence)

    def protein(self, protein_id: str, sequence: str) -> np.ndarray:
        """float32 [d]."""
        return encodings.encode(self.name, sequence).mean(axis=0)

    def close(self) -> None:
        pass


class H5Features:
    """Embeddings from one or more h5 files (one dataset per sanitised id: [L, d] or [d])."""

    def __init__(self, paths: list[str | pathlib.Path]):
        if not paths:
            raise ValueError("no embedding files given")
        self.paths = [pathlib.Path(p) for p in paths]
        self.files = []
        for p in self.paths:
            if not p.exists():
                raise FileNotFoundError(f"embedding file {p} does not exist; write it with `python -m protlm.embed`")
            self.files.append(h5py.File(p, "r"))
        first = self.files[0].attrs
        self.description = {
            "kind": "embeddings",
            "files": [str(p) for p in self.paths],
            **{k: attr_value(first.get(k)) for k in ("model", "layer", "dtype", "representation") if k in first},
        }

    def _get(self, protein_id: str) -> tuple[np.ndarray, pathlib.Path]:
        key = sanitize_id(protein_id)
        for path, f in zip(self.paths, self.files):
            if key in f:
                return f[key][()], path
        raise FeatureError(
            f"protein {protein_id!r} (h5 key {key!r}) is in none of {', '.join(map(str, self.paths))}; "
            "embed the FASTA written by `python -m protlm.downstream --task ... --write_fasta F`"
        )

    def residue(self, protein_id: str, sequence: str) -> np.ndarray:
        """[L, d] in the stored dtype."""
        x, path = self._get(protein_id)
        if x.ndim != 2:
            raise FeatureError(
                f"{path}: {protein_id!r} is a per-protein embedding {x.shape}; this task needs per-residue "
                "embeddings (`python -m protlm.embed --per_residue`)"
            )
        if x.shape[0] != len(sequence):
            raise FeatureError(f"{path}: {protein_id!r} has {x.shape[0]} residues, the data set {len(sequence)}")
        return x

    def protein(self, protein_id: str, sequence: str) -> np.ndarray:
        """float32 [d]; per-residue datasets are mean-pooled."""
        x, path = self._get(protein_id)
        if x.ndim == 2:
            if x.shape[0] != len(sequence):
                raise FeatureError(f"{path}: {protein_id!r} has {x.shape[0]} residues, the data set {len(sequence)}")
            return x.astype(np.float32).mean(axis=0)
        if x.ndim != 1:
            raise FeatureError(f"{path}: {protein_id!r} has shape {x.shape}; expected [L, d] or [d]")
        return x.astype(np.float32)

    def close(self) -> None:
        for f in self.files:
            f.close()


def attr_value(v):
    """An h5 attribute as plain Python (str for bytes, int/float for numpy scalars)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def open_features(embeddings: list[str] | None, encoding: str | None):
    """Exactly one of `embeddings` (h5 paths) and `encoding` (baseline name)."""
    if bool(embeddings) == bool(encoding):
        raise ValueError("give exactly one of --embeddings (h5 files) or --encoding (onehot|blosum62)")
    return H5Features(embeddings) if embeddings else EncodingFeatures(encoding)
