"""The h5 files `protlm.embed` writes: keys, provenance, one writer at a time, resume.

Keys (`KEY_STYLES`): "id" (default) is the first word of the FASTA header, "prottrans" the whole
header as the ProtTrans embedder keys it (`prott5_embedder.py`: the header line without '>',
id and description joined by one space); both with '/' and '.' replaced by '_'. Every dataset
keeps its original header in the attribute `header`.

File attributes: how the embeddings were made (model, step, layer, dtype, family, representation,
key_style: a resume must match them) and from what (`fasta`: the FASTA path; `fasta_ids_sha256`:
a digest of its sorted keys). Output made from other proteins is an error, never a merge; the
same proteins from another path (a copy, a temporary file) are the same input.

Writing: work in progress lives in OUT.partial, renamed to OUT when every protein is in it; an
OS lock (`protlm.locks`, OUT.lock) keeps a second process from touching either, and a killed
holder's lock does not outlive it. A rerun on a finished OUT finds every key there and writes
nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import time
from typing import Iterable

import h5py
import numpy as np

from protlm.downstream.features import attr_value, sanitize_id
from protlm.locks import OutputLock

log = logging.getLogger("protlm.embed")

KEY_STYLES = ("id", "prottrans")
FLUSH_SECONDS = 30.0


class EmbedInputError(ValueError):
    """Input that cannot be embedded (duplicate ids, too long for the model, wrong output, ...)."""


def h5_key(record_id: str, description: str, key_style: str = "id") -> str:
    """The dataset name of a FASTA record in `key_style` (see the module docstring)."""
    if key_style == "prottrans":
        header = f"{record_id} {description}" if description else record_id
        return header.replace(">", "").replace("/", "_").replace(".", "_")
    if key_style != "id":
        raise ValueError(f"--key_style must be one of {KEY_STYLES}, got {key_style!r}")
    return sanitize_id(record_id)


def ids_digest(keys: Iterable[str]) -> str:
    """sha256 of the sorted keys: which proteins a file is made from, independent of order."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()


def output_paths(output: str | os.PathLike, per_residue: bool, per_protein: bool) -> dict[str, pathlib.Path]:
    """{"per_residue"|"per_protein": path}; both requested -> OUT.per_residue.h5 / OUT.per_protein.h5."""
    out = pathlib.Path(output)
    kinds = [k for k, on in (("per_residue", per_residue), ("per_protein", per_protein)) if on]
    if len(kinds) == 1:
        return {kinds[0]: out}
    return {k: out.with_name(f"{out.stem}.{k}{out.suffix or '.h5'}") for k in kinds}


class H5Output:
    """One embedding h5, written under OUT.partial and renamed to OUT when complete.

    Args:
      path: OUT.
      attrs: how the embeddings are made; an existing OUT / OUT.partial must have the same.
      fasta: the FASTA path (recorded) and `digest`, `ids_digest` of its keys (compared).

    Raises:
      LockedError: another process writes OUT.
      EmbedInputError: OUT is not an HDF5 file, or was made differently / from other proteins.
    """

    def __init__(self, path: pathlib.Path, attrs: dict, fasta: str | os.PathLike, digest: str):
        self.path = pathlib.Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.attrs = dict(attrs)
        self.source = {"fasta": str(pathlib.Path(fasta).resolve()), "fasta_ids_sha256": digest}
        self._fasta = str(fasta)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = OutputLock(self.path.with_name(self.path.name + ".lock"), str(self.path)).acquire()
        self.file = None
        try:
            self.done = self._existing_keys()
        except BaseException:
            self.lock.release()
            raise
        self._last_flush = time.time()

    def _existing_keys(self) -> set[str]:
        """Keys of OUT and of a readable OUT.partial (an interrupted run), after checking both."""
        done: set[str] = set()
        if self.partial.exists():
            try:
                with h5py.File(self.partial, "r") as f:
                    self._check(f, self.partial)
                    done |= set(f.keys())
            except OSError as e:   # we hold the lock: a partial no one can read is a dead run's
                log.warning("%s is unreadable (%s); starting it again", self.partial, e)
                self.partial.unlink()
        if self.path.exists():
            if not h5py.is_hdf5(self.path):
                raise EmbedInputError(f"{self.path}: exists and is not an HDF5 file; choose another --output "
                                      "or move the file away")
            with h5py.File(self.path, "r") as f:
                self._check(f, self.path)
                done |= set(f.keys())
        return done

    def _check(self, f: h5py.File, where: pathlib.Path) -> None:
        for k, v in self.attrs.items():
            if k in f.attrs and attr_value(f.attrs[k]) != v:
                raise EmbedInputError(
                    f"{where} holds embeddings with {k}={attr_value(f.attrs[k])!r}, this run has {k}={v!r}; "
                    "use another --output (or delete the file) to start a new one")
        digest = attr_value(f.attrs.get("fasta_ids_sha256", self.source["fasta_ids_sha256"]))
        if digest != self.source["fasta_ids_sha256"]:
            raise EmbedInputError(
                f"{where} was made from other proteins ({attr_value(f.attrs.get('fasta', '?'))}) than this "
                f"run embeds ({self._fasta}); use another --output, or delete {where} to embed "
                f"{self._fasta} into it")

    def _open(self) -> None:
        """Opens OUT.partial for writing, carrying forward what OUT already holds."""
        if self.path.exists():
            with h5py.File(self.path, "r") as src, h5py.File(self.partial, "a") as dst:
                for key in src:
                    if key not in dst:
                        src.copy(src[key], dst, name=key)
        self.file = h5py.File(self.partial, "a")
        self.file.attrs.update({**self.attrs, **self.source})

    def write(self, key: str, array: np.ndarray, header: str) -> None:
        if self.file is None:
            self._open()
        self.file.create_dataset(key, data=array).attrs["header"] = header
        self.done.add(key)
        if time.time() - self._last_flush > FLUSH_SECONDS:
            self.file.flush()
            self._last_flush = time.time()

    def finish(self, keys: set[str]) -> pathlib.Path:
        """Renames the partial file to OUT once every key of `keys` is in it (nothing to do when
        OUT already had them all)."""
        if self.file is None and self.path.exists() and not self.partial.exists() and keys <= self.done:
            return self.path
        if self.file is None:
            self._open()
        missing = keys - set(self.file.keys())
        self.file.close()
        if missing:
            raise RuntimeError(f"{self.partial}: {len(missing)} of {len(keys)} proteins missing (e.g. "
                               f"{sorted(missing)[0]!r}); kept for a resume")
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        """Closes without renaming (the partial file stays for a later resume), unlocks."""
        if self.file is not None and self.file.id.valid:
            self.file.close()
        self.lock.release()
