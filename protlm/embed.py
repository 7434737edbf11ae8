"""`python -m protlm.embed`: embed a FASTA file with a protlm model's encoder into h5.

Example:
  python -m protlm.embed --model runs/prot_t5_small --fasta proteins.fasta --output emb.h5 --per_residue
  python -m protlm.embed --model hf/prot_t5_xl_half_uniref50-enc --fasta p.fasta --per_protein --dtype float16

`--model` is a protlm model directory (config.json + orbax checkpoints/) or a Hugging Face directory
(config.json with `model_type` + weights), imported in-process with protlm.hf.importer.

`--step N` reads that checkpoint of a protlm directory (default: the latest readable one).

Output (as the ProtTrans embedder writes it): one h5 dataset per FASTA record, keyed by the sanitised
id ('/' and '.' -> '_'; `--key_style prottrans`: the whole header, as prott5_embedder.py keys it),
per-residue `[L, d]` (the family's special tokens dropped, `Family.tokenize`: ProtT5's `</s>`,
ProtBert's [CLS]/[SEP]) or per-protein `[d]` (mean over residues; specials and padding excluded);
each keeps its header as the attribute `header`. File attributes: model, step, layer, dtype, family,
representation, key_style, and the input (`fasta`, `fasta_ids_sha256`): see `protlm.embed_output`.
With both --per_residue and --per_protein, OUT.h5 becomes OUT.per_residue.h5 and OUT.per_protein.h5.
Runs resume: ids already in the output are skipped (a rerun on a finished output says so and exits
0); work in progress lives in OUT.h5.partial and is renamed to OUT.h5 at the end; a second process on
the same output is refused (OUT.h5.lock). fp16 results are stored as float16; bfloat16 and float32
results as float32 (HDF5 has no bfloat16). Rare residues follow the family's tokenizer: U Z O B -> X
(the ProtTrans README's rule; prott5_embedder.py keeps B, see docs/huggingface.md).

Batching (`plan_batches`): proteins are sorted by length, longest first (within chunks of
`CHUNK_PROTEINS`, so the FASTA is streamed), and cut into consecutive batches; a batch is padded to
the length bucket of its longest protein (`bucket_for`) and holds `max(1, --max_tokens_per_batch //
length)` proteins, so a protein longer than the budget runs alone. Buckets (`BUCKETS`, 44 lengths up
to 32,768 tokens) grow geometrically: x1.1 up to 2,048 tokens (multiples of 16, then 64), x1.2 up to
8,192 (multiples of 256), x1.25 up to 32,768 (multiples of 1,024); longer proteins are padded to a
multiple of `LONG_STEP` (1,024; titin, 34,350 residues -> 34,816 tokens). Only a chunk's last batch
is partial; its rows are padded to a power of two. Distinct compiled shapes per chunk are therefore
at most one per bucket used plus one (32 on the 2,768 DeepLoc test proteins, at 1.07 padded tokens
per residue with the default budget).

Compilation: the jitted forward is memoised per (config incl. dtype, layer, representation), so
repeated `embed_fasta` calls in one process reuse compiled shapes; `--compilation_cache_dir` turns on
jax's persistent compilation cache so later processes load them too. Batches longer than
`--blocked_attention_from` tokens (8,192) use blocked attention (`protlm.layers.blocked_attention`,
query blocks of 512, key blocks of 2,048; memory linear in length) unless the model already sets
`attention_block_size`.
"""
from __future__ import annotations

import argparse
import bisect
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import sys
import time
from typing import Iterator, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from protlm import checkpoints, cli, models
from protlm.data.fasta import read_fasta
from protlm.downstream.features import sanitize_id  # noqa: F401  (the default key, re-exported)
from protlm.embed_output import KEY_STYLES, EmbedInputError, H5Output, h5_key, ids_digest, output_paths
from protlm.models import registry
from protlm.models.family import Family

log = logging.getLogger("protlm.embed")

DTYPES = ("float32", "bfloat16", "float16")


def length_ladder(segments, start: int = 32) -> tuple[int, ...]:
    """Padded lengths from `start`: per (upper, ratio, multiple) segment, x`ratio` steps rounded up
    to `multiple`, ending exactly at `upper`."""
    out = [start]
    for upper, ratio, multiple in segments:
        while out[-1] < upper:
            nxt = math.ceil(out[-1] * ratio / multiple) * multiple
            out.append(min(upper, max(nxt, out[-1] + multiple)))
    return tuple(out)


# Padded lengths (tokens incl. specials): x1.1 steps (+ rounding) up to 2,048 tokens, where nearly all
# proteins are, coarser above (44 buckets). See the module docstring and docs/benchmarks.md.
BUCKET_SEGMENTS = ((512, 1.1, 16), (2048, 1.1, 64), (8192, 1.2, 256), (32768, 1.25, 1024))
BUCKETS = length_ladder(BUCKET_SEGMENTS)
LONG_STEP = 1024  # above BUCKETS[-1]: padded to a multiple of this
# Batches longer than this use blocked attention (when the model has none configured).
BLOCKED_ATTENTION_FROM = 8192
BLOCKED_QUERY_BLOCK, BLOCKED_KEY_BLOCK = 512, 2048
CHUNK_PROTEINS = 20000  # proteins read, sorted and embedded at a time (bounds host memory)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready to embed: Model object, params (unscanned), config, its family, source and
    the checkpoint step it was read from (None: not a protlm checkpoint)."""

    model: object
    params: dict
    config: object
    family: Family
    source: str
    step: Optional[int] = None

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @property
    def max_tokens(self) -> int | None:
        """Longest token sequence the model accepts (absolute positions); None = unbounded."""
        return self.config.max_length


def load_model(path: str | os.PathLike, dtype: str = "float32", step: Optional[int] = None) -> LoadedModel:
    """Loads a protlm model directory (checkpoint `step`, default the latest readable) or a Hugging
    Face directory for inference in `dtype`."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    path = pathlib.Path(path)
    if model_dir_kind(path) == "protlm":
        params, config, step = checkpoints.read_params(path, step)
        return dataclasses.replace(prepare_model(params, config, dtype, "protlm"), step=step)
    if step is not None:
        raise ValueError(f"--step {step}: {path} is a Hugging Face directory (one set of weights); "
                         "--step chooses a checkpoint of a protlm model directory")
    from protlm.hf import importer  # pylint: disable=import-outside-toplevel

    params, config = importer.params_from_hf(path)
    return prepare_model(params, config, dtype, "huggingface")


def model_dir_kind(path: str | os.PathLike) -> str:
    """"protlm" (config.json from `protlm.models.config_to_dict`) or "huggingface" (HF config.json)."""
    cfg_file = pathlib.Path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: missing; --model must be a protlm model directory or a "
                                "Hugging Face model directory")
    raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    return "protlm" if "family" in raw and "config" in raw else "huggingface"


def read_model_config(path: str | os.PathLike):
    """The protlm config of a protlm or Hugging Face model directory, without loading weights.

    Returns:
      (config dataclass, "protlm" | "huggingface").
    """
    kind = model_dir_kind(path)
    raw = json.loads((pathlib.Path(path) / "config.json").read_text(encoding="utf-8"))
    if kind == "protlm":
        return models.config_from_dict(raw), kind
    family = registry.family_for_hf_config(raw, str(pathlib.Path(path) / "config.json"))
    return family.hf().from_hf_config(raw), kind


def prepare_model(params: dict, config, dtype: str = "float32", source: str = "params") -> LoadedModel:
    """Wraps an unscanned, unboxed params tree and its config for inference in `dtype`."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    # Params are unscanned (load_params / import); inference needs no remat.
    config = dataclasses.replace(config, scan_layers=False, remat_policy="none", dtype=dtype)
    target = jnp.dtype(dtype)
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, target) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else jnp.asarray(x),
        nn.unbox(params))
    family = registry.get_family(config)
    return LoadedModel(family.model(config), params, config, family, source)


# ------------------------------------------------------------------------------------ input


class Entry(NamedTuple):
    id: str
    key: str  # h5 dataset name (`embed_output.h5_key`)
    length: int
    line: int


def scan_fasta(fasta: str | os.PathLike, key_style: str = "id") -> list[Entry]:
    """Validation pass over the whole FASTA before any compute (ids, lengths; sequences not kept).

    Raises:
      FastaFormatError: malformed file (also an empty file).
      EmbedInputError: duplicate ids (also ids equal after sanitising).
    """
    entries, seen = [], {}
    for rec in read_fasta(str(fasta)):
        key = h5_key(rec.id, rec.description, key_style)
        if key in seen:
            first = seen[key]
            same = "duplicate id" if first.id == rec.id else f"id {rec.id!r} collides with {first.id!r} after sanitising"
            raise EmbedInputError(
                f"{rec.path}:{rec.line}: {same} (first at line {first.line}); h5 keys must be unique. "
                "Fix: give every record a unique id (e.g. `seqkit rename`)")
        entry = Entry(rec.id, key, len(rec.sequence), rec.line)
        seen[key] = entry
        entries.append(entry)
    return entries


def bucket_for(n_tokens: int, max_tokens: int | None = None) -> int:
    """The padded length for `n_tokens`: the smallest bucket that holds it, above the largest a
    multiple of `LONG_STEP` (capped at the model's maximum)."""
    i = bisect.bisect_left(BUCKETS, n_tokens)
    b = BUCKETS[i] if i < len(BUCKETS) else -(-n_tokens // LONG_STEP) * LONG_STEP
    return min(b, max_tokens) if max_tokens else b


def plan_batches(n_tokens: list[int], max_tokens_per_batch: int, max_tokens: int | None = None
                 ) -> list[tuple[int, int, list[int]]]:
    """Cuts items sorted by length (longest first) into (padded length, padded rows, indices) batches.

    Each batch starts at the longest remaining item, is padded to its bucket b and takes the next
    max(1, max_tokens_per_batch // b) items (all shorter); rows depend only on b, so every batch is
    one of the (b, rows(b)) shapes except the last, partial one, whose rows are padded to a power
    of two. Padding is the bucket rounding plus the length spread of neighbours in sorted order.
    """
    order = sorted(range(len(n_tokens)), key=lambda i: -n_tokens[i])
    batches, j = [], 0
    while j < len(order):
        b = bucket_for(n_tokens[order[j]], max_tokens)
        size = max(1, max_tokens_per_batch // b)
        part = order[j : j + size]
        j += len(part)
        rows = size if len(part) == size else min(size, 1 << (len(part) - 1).bit_length())
        batches.append((b, rows, part))
    return batches


def padding_stats(n_tokens: list[int], max_tokens_per_batch: int, max_tokens: int | None = None) -> dict:
    """Padded tokens per real token, attention cells and distinct shapes of `plan_batches`."""
    plan = plan_batches(n_tokens, max_tokens_per_batch, max_tokens)
    padded = sum(b * rows for b, rows, _ in plan)
    return {"padded_tokens_per_token": float(padded / max(1, sum(n_tokens))),
            "attention_cells": int(sum(b * b * rows for b, rows, _ in plan)),
            "shapes": len({(b, rows) for b, rows, _ in plan}), "batches": len(plan)}


# ------------------------------------------------------------------------------------ compute


def enable_compilation_cache(path: str | os.PathLike) -> None:
    """jax's persistent compilation cache in `path` for every compilation of this process."""
    pathlib.Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.fspath(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def make_forward(loaded: LoadedModel, layer: int, per_residue: bool, per_protein: bool,
                 blocked_attention_from: int = BLOCKED_ATTENTION_FROM):
    """fn(params, tokens [B, L], residue_mask [B, L]) -> (hidden [B, L, d] | None, mean [B, d] | None).

    The jitted functions are memoised per (config, layer, representation), so every call with the same
    model reuses the compiled shapes. Batches with L > `blocked_attention_from` (0 = never) run the
    same weights with blocked attention when the config has dense attention.
    """
    dense = _jitted_forward(loaded.config, layer, per_residue, per_protein)
    cfg = loaded.config
    if (blocked_attention_from <= 0 or not hasattr(cfg, "attention_block_size")
            or cfg.attention_block_size > 0):
        return dense
    blocked_cfg = dataclasses.replace(cfg, attention_block_size=BLOCKED_QUERY_BLOCK,
                                      attention_key_block_size=BLOCKED_KEY_BLOCK)

    def forward(params, tokens, residue_mask):
        if tokens.shape[1] > blocked_attention_from:
            return _jitted_forward(blocked_cfg, layer, per_residue, per_protein)(params, tokens, residue_mask)
        return dense(params, tokens, residue_mask)

    return forward


@functools.lru_cache(maxsize=16)
def _jitted_forward(config, layer: int, per_residue: bool, per_protein: bool):
    model = models.get_model(config)

    def forward(params, tokens, residue_mask):
        if layer == -1:
            h = model.encode(params, tokens)
        else:
            _, hidden = model.encode(params, tokens, output_hidden_states=True)
            h = hidden[layer]
        h32 = h.astype(jnp.float32)
        m = residue_mask.astype(jnp.float32)[..., None]  # [B, L, 1]
        mean = (h32 * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)  # [B, d]
        return (h if per_residue else None), (mean if per_protein else None)

    return jax.jit(forward)


def _chunks(fasta, size: int) -> Iterator[list]:
    chunk = []
    for rec in read_fasta(str(fasta)):
        chunk.append(rec)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def embed_batches(loaded: LoadedModel, forward, records: list, max_tokens_per_batch: int) -> Iterator[tuple]:
    """Runs `forward` over `records` in length-bucketed batches, longest first.

    Yields:
      (records of the batch, per-residue list of [L_i, d] arrays or None, per-protein [B, d] or None),
      specials and padding already removed.
    """

    tokenized = [loaded.family.tokenize(r.sequence) for r in records]
    for length, rows, idx in plan_batches([len(t) for t, _ in tokenized], max_tokens_per_batch, loaded.max_tokens):
        tokens = np.full((rows, length), loaded.family.pad_id, np.int32)  # [B, L]
        mask = np.zeros((rows, length), bool)  # [B, L], True on residues
        for r, i in enumerate(idx):
            t, off = tokenized[i]
            tokens[r, : len(t)] = t
            mask[r, off : off + len(records[i].sequence)] = True
        hidden, mean = jax.device_get(forward(loaded.params, tokens, mask))
        recs = [records[i] for i in idx]
        residue = None
        if hidden is not None:
            residue = [np.asarray(hidden[r, tokenized[i][1] : tokenized[i][1] + len(records[i].sequence)])
                       for r, i in enumerate(idx)]
        yield recs, residue, (None if mean is None else np.asarray(mean[: len(idx)]))


def embed_fasta(
    model: str | os.PathLike,
    fasta: str | os.PathLike,
    output: str | os.PathLike,
    per_residue: bool = True,
    per_protein: bool = False,
    layer: int = -1,
    dtype: str = "float32",
    max_tokens_per_batch: int = 8192,
    progress: bool = True,
    loaded: LoadedModel | None = None,
    blocked_attention_from: int = BLOCKED_ATTENTION_FROM,
    key_style: str = "id",
    step: Optional[int] = None,
) -> dict:
    """Embeds every protein of `fasta` not yet in the output(s).

    Args:
      model: protlm or Hugging Face model directory (ignored when `loaded` is given).
      fasta: FASTA path (plain or gzip).
      output: h5 path (see `output_paths` when both representations are requested).
      per_residue, per_protein: which representation(s) to write (at least one).
      layer: hidden state index as HF `hidden_states` (0 = embedding output, -1 = last layer).
      dtype: compute dtype (float32 | bfloat16 | float16); a `loaded` model keeps its own.
      max_tokens_per_batch: padded tokens per batch.
      progress: show a tqdm bar.
      loaded: an already loaded model (tests, tools).
      blocked_attention_from: batches padded beyond this many tokens use blocked attention (0 = never;
        a model configured with `attention_block_size` always uses its own).
      key_style: h5 keys, "id" (first word of the header) or "prottrans" (the whole header).
      step: checkpoint of a protlm model directory (None: the latest readable one).

    Returns:
      Stats: proteins, residues, skipped, seconds, proteins_per_s, residues_per_s, outputs.

    Raises:
      FastaFormatError, EmbedInputError: bad input or an output made otherwise / from other proteins.
      LockedError: another process writes the output.
    """

    if not (per_residue or per_protein):
        raise ValueError("request --per_residue and/or --per_protein")
    if max_tokens_per_batch < 1:
        raise ValueError(f"--max_tokens_per_batch must be positive, got {max_tokens_per_batch}")
    if key_style not in KEY_STYLES:
        raise ValueError(f"--key_style must be one of {KEY_STYLES}, got {key_style!r}")
    entries = scan_fasta(fasta, key_style)  # every input error surfaces here, before the model is loaded
    loaded = loaded or load_model(model, dtype, step)
    dtype = str(loaded.config.dtype)  # a pre-loaded model brings its own
    n_specials = loaded.family.num_special_tokens()
    n_layers = loaded.num_layers
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ValueError(f"--layer {layer} out of range: the model has {n_layers} layers, hidden states "
                         f"0..{n_layers} (or -1 for the last)")
    layer = layer + n_layers + 1 if layer < 0 else layer
    if layer == n_layers:
        layer = -1  # the last hidden state is the model's own output (recorded as -1)
    if loaded.max_tokens:
        for e in entries:
            if e.length + n_specials > loaded.max_tokens:
                raise EmbedInputError(
                    f"{fasta}:{e.line}: record {e.id!r} has {e.length} residues; this model accepts at most "
                    f"{loaded.max_tokens - n_specials}. Fix: split or crop the sequence")
    attrs = {"model": os.path.normpath(str(model)), "layer": layer, "dtype": dtype,
             "family": loaded.family.name, "key_style": key_style}
    if loaded.step is not None:
        attrs["step"] = loaded.step
    paths = output_paths(output, per_residue, per_protein)
    digest = ids_digest(e.key for e in entries)
    outs: dict[str, H5Output] = {}
    t0, n_prot, n_res = time.time(), 0, 0
    try:
        for k, p in paths.items():
            outs[k] = H5Output(p, {**attrs, "representation": k}, fasta, digest)
        done = set.intersection(*(o.done for o in outs.values()))
        todo = [e for e in entries if e.key not in done]
        names = ", ".join(str(p) for p in paths.values())
        if not todo:
            log.info("all %d proteins of %s are already in %s; nothing to do", len(entries), fasta, names)
        else:
            log.info("%s: %d proteins, %d already embedded, %d to do (%d residues) -> %s; model %s (%s%s, "
                     "%s, d=%d)", fasta, len(entries), len(entries) - len(todo), len(todo),
                     sum(e.length for e in todo), names, model, loaded.family.name,
                     "" if loaded.step is None else f" step {loaded.step}", dtype, loaded.dim)
            n_prot, n_res = _embed_into(outs, loaded, fasta, todo, layer, dtype, max_tokens_per_batch,
                                        progress, blocked_attention_from, key_style)
        written = {k: str(o.finish({e.key for e in entries})) for k, o in outs.items()}
    finally:
        for o in outs.values():
            o.close()
    seconds = time.time() - t0
    stats = {
        "proteins": n_prot, "residues": n_res, "skipped": len(entries) - len(todo), "seconds": seconds,
        "proteins_per_s": n_prot / max(seconds, 1e-9), "residues_per_s": n_res / max(seconds, 1e-9),
        "outputs": written,
    }
    if todo:
        log.info("embedded %d proteins (%d residues) in %.1fs: %.1f proteins/s, %.0f residues/s -> %s",
                 n_prot, n_res, seconds, stats["proteins_per_s"], stats["residues_per_s"],
                 ", ".join(written.values()))
    return stats


def _embed_into(outs: dict, loaded: LoadedModel, fasta, todo: list[Entry], layer: int, dtype: str,
                max_tokens_per_batch: int, progress: bool, blocked_attention_from: int,
                key_style: str) -> tuple[int, int]:
    """Embeds the `todo` proteins of `fasta` into `outs`; returns (proteins, residues) done."""
    forward = make_forward(loaded, layer, "per_residue" in outs, "per_protein" in outs, blocked_attention_from)
    store_dtype = np.float16 if dtype == "float16" else np.float32
    todo_keys = {e.key for e in todo}
    # The bar counts residues (the work), so its ETA holds although the longest proteins come first.
    bar = tqdm(total=sum(e.length for e in todo), unit="res", unit_scale=True, disable=not progress,
               dynamic_ncols=True, mininterval=1.0)
    t0, n_prot, n_res = time.time(), 0, 0
    for chunk in _chunks(fasta, CHUNK_PROTEINS):
        chunk = [r for r in chunk if h5_key(r.id, r.description, key_style) in todo_keys]
        for recs, residue, protein in embed_batches(loaded, forward, chunk, max_tokens_per_batch):
            for r, rec in enumerate(recs):
                key = h5_key(rec.id, rec.description, key_style)
                header = f"{rec.id} {rec.description}".strip()
                if residue is not None and key not in outs["per_residue"].done:
                    outs["per_residue"].write(key, residue[r].astype(store_dtype), header)
                if protein is not None and key not in outs["per_protein"].done:
                    outs["per_protein"].write(key, protein[r].astype(store_dtype), header)
            n_prot += len(recs)
            n_res += sum(len(rec.sequence) for rec in recs)
            bar.update(sum(len(rec.sequence) for rec in recs))
            elapsed = max(time.time() - t0, 1e-9)
            bar.set_postfix_str(f"{n_prot}/{len(todo)} proteins, {n_prot / elapsed:.2f} prot/s", refresh=False)
    bar.close()
    return n_prot, n_res


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m protlm.embed", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="protlm model directory or Hugging Face directory")
    p.add_argument("--fasta", required=True, help="input FASTA (plain or .gz)")
    p.add_argument("--output", default=None, help="output h5 (default: <fasta stem>.h5 in the current directory)")
    p.add_argument("--per_residue", action="store_true", help="write [L, d] per protein (default if neither flag)")
    p.add_argument("--per_protein", action="store_true", help="write the mean over residues [d]")
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint step of a protlm model directory (default: the latest readable)")
    p.add_argument("--layer", type=int, default=-1, help="hidden state index (HF convention; -1 = last layer)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--max_tokens_per_batch", type=int, default=8192)
    p.add_argument("--blocked_attention_from", type=int, default=BLOCKED_ATTENTION_FROM,
                   help="batches longer than this many tokens use blocked attention (0 = never)")
    p.add_argument("--compilation_cache_dir", default=None,
                   help="jax persistent compilation cache directory (later runs skip compiling)")
    p.add_argument("--key_style", choices=KEY_STYLES, default="id",
                   help="h5 keys: the id (first word of the header) or, as the ProtTrans embedder, the "
                        "whole header; both with '/' and '.' -> '_'")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    if not (args.per_residue or args.per_protein):
        args.per_residue = True
    if args.output is None:
        name = pathlib.Path(args.fasta).name
        for suffix in (".gz", ".fasta", ".fa", ".faa"):
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        args.output = f"{name}.h5"
    return args


def main(argv=None) -> int:
    cli.setup_logging()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.compilation_cache_dir:
        enable_compilation_cache(args.compilation_cache_dir)
    try:
        embed_fasta(args.model, args.fasta, args.output, args.per_residue, args.per_protein, args.layer,
                    args.dtype, args.max_tokens_per_batch, progress=not args.no_progress,
                    blocked_attention_from=args.blocked_attention_from, key_style=args.key_style,
                    step=args.step)
    except (EmbedInputError, ValueError) as e:   # FastaFormatError is a ValueError too
        print(f"embed: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # pylint: disable=broad-except
        code = cli.report(e, "embed")
        if code is None:
            raise
        return code
    return 0


if __name__ == "__main__":
    cli.run(main, "embed")
