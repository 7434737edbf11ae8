"""Embedding throughput: `protlm.embed` vs the ProtTrans procedure in transformers, same proteins.

  python tools/bench_embed.py --model prot_t5_small [--fasta FASTA] [--limit 200]
      [--dtype auto|float32|float16|bfloat16] [--only protlm|transformers] [--rounds 1]
  python tools/bench_embed.py --model prot_t5_xl --max_length_probe [--probe_max 40000]

protlm: `protlm.embed.embed_fasta` (sorted by length, batches padded to fine geometric length
buckets under a token budget, one memoised jitted forward per shape, mean-pooled per-protein
embeddings written to h5). transformers: the ProtTrans embedding
procedure (agemagician/ProtTrans `Embedding/prott5_embedder.py`): `T5EncoderModel` (ProtBert:
`BertModel`), proteins sorted by length (longest first), a batch closed at `--max_residues` (4,000)
residues, `--max_batch` (100) proteins or a protein over `--max_seq_len` (1,000) residues,
padding to the longest in the batch, `torch.no_grad`, half precision on GPU / float32 on CPU, the
per-protein mean over residues on the device, written to h5 at the end. Token ids come from
protlm's tables, which equal the Rostlab tokenizers' ids (tests/hf), so tokenisation is not timed
on either side.

Both sides embed the same proteins (default: the 2,768 DeepLoc test proteins; `--limit N` takes
the first N). Each side first runs an untimed warm-up pass over the same proteins (reported as
`cold_seconds`: for protlm it includes compiling every shape), then the timed passes alternate
(`--rounds`). `embed_fasta` memoises its jitted forward per model config, so the timed passes reuse
the warm-up's executables in process (jax's persistent compilation cache, `--compilation_cache`,
is on as well; it only matters across processes). Each side also reports its padded tokens per
token (`padded_tokens_per_token`, specials included) on these proteins. Weights: random for a preset; a protlm or Hugging Face directory
is loaded by protlm (`protlm.embed.load_model`); transformers loads a Hugging Face directory and
otherwise builds the same config with random weights (values do not change the speed).

`--max_length_probe` finds the longest protein each side embeds on the device: one protein per
child process (a real sequence repeated to the length), doubling from `--probe_start`, then
bisection to `--probe_resolution` residues, up to `--probe_max`. On CPU the child's address space
is capped at `--probe_memory_gb`, so a failed probe cannot take the shared machine's memory.

`--attention_memory_length L` prints XLA's compiled memory of one encoder attention core of the
model at length L, dense vs `protlm.layers.blocked_attention` (abstract inputs: runs on a CPU).

Prints one JSON object per measurement (residues_per_second, proteins_per_second, seconds,
peak memory per side, and `ratio` = protlm residues/s / transformers residues/s).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402  pylint: disable=wrong-import-position

bc.setup_env()

SIDES = ("protlm", "transformers")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="prot_t5_small", help="preset or model directory")
    p.add_argument("--fasta", default=None, help=f"default: DATA_ROOT/{bc.DEEPLOC_TEST}")
    p.add_argument("--data_root", default=None)
    p.add_argument("--limit", type=int, default=0, help="first N proteins (0 = all)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="auto = float16 on GPU, float32 on CPU (the ProtTrans procedure)")
    p.add_argument("--only", choices=SIDES, default=None)
    p.add_argument("--rounds", type=int, default=1, help="timed passes per side")
    p.add_argument("--max_tokens_per_batch", type=int, default=None,
                   help="protlm token budget (default: protlm.embed's)")
    p.add_argument("--max_residues", type=int, default=4000, help="transformers: residues/batch")
    p.add_argument("--max_seq_len", type=int, default=1000, help="transformers: longer runs alone")
    p.add_argument("--max_batch", type=int, default=100, help="transformers: proteins/batch")
    p.add_argument("--attention_block_size", type=int, default=0,
                   help="protlm: blocked attention, query rows per block (T5Config field)")
    p.add_argument("--attention_key_block_size", type=int, default=0,
                   help="protlm: key columns per block with the online softmax (0 = all keys)")
    p.add_argument("--compilation_cache", default=None,
                   help="jax persistent compilation cache dir (default: a fresh temporary one, so "
                        "the timed passes reuse the warm-up's executables; 'none' disables it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_length_probe", action="store_true")
    p.add_argument("--probe_start", type=int, default=1024)
    p.add_argument("--probe_max", type=int, default=40000)
    p.add_argument("--probe_resolution", type=int, default=512)
    p.add_argument("--probe_memory_gb", type=float, default=8.0, help="CPU only: child memory cap")
    p.add_argument("--attention_memory_length", type=int, default=0,
                   help="print the compiled memory of one attention layer of the model at this "
                        "length, dense vs blocked (compile only, no weights, runs anywhere)")
    p.add_argument("--_probe_side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_probe_length", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve_dtype(dtype: str) -> str:
    if dtype != "auto":
        return dtype
    import torch  # pylint: disable=import-outside-toplevel
    return "float16" if torch.cuda.is_available() else "float32"


def _overrides(args, dtype) -> dict:
    o = {"dtype": dtype}
    if args.attention_block_size:
        o["attention_block_size"] = args.attention_block_size
        o["attention_key_block_size"] = args.attention_key_block_size
    return o


def load_config(args, dtype):
    config, source = bc.resolve_model(args.model, **_overrides(args, dtype))
    if args.attention_block_size and not hasattr(config, "attention_block_size"):
        raise SystemExit("--attention_block_size: this model config has no `attention_block_size` "
                         "field (blocked attention is wired into ProtT5 only)")
    return config, source


# ------------------------------------------------------------------------------------ inputs
def proteins(args) -> list[tuple[str, str]]:
    fasta = args.fasta or str(bc.data_root(args.data_root) / bc.DEEPLOC_TEST)
    from protlm.data.fasta import read_fasta  # pylint: disable=import-outside-toplevel
    out = []
    for rec in read_fasta(fasta):
        out.append((rec.id, rec.sequence))
        if args.limit and len(out) == args.limit:
            break
    return out


def write_fasta(path: pathlib.Path, records) -> pathlib.Path:
    path.write_text("".join(f">{i}\n{s}\n" for i, s in records), encoding="ascii")
    return path


# ------------------------------------------------------------------------------------ protlm
class ProtlmEmbedder:
    """`protlm.embed.embed_fasta` on an already loaded model (random or checkpoint weights)."""

    def __init__(self, config, source, args, dtype):
        from protlm import embed  # pylint: disable=import-outside-toplevel

        self.embed = embed
        if source == "preset":
            self.loaded = embed.prepare_model(self._random_params(config, args.seed), config,
                                              dtype, "preset")
        else:
            self.loaded = embed.load_model(args.model, dtype)
            if args.attention_block_size:
                cfg = dataclasses.replace(
                    self.loaded.config, attention_block_size=args.attention_block_size,
                    attention_key_block_size=args.attention_key_block_size)
                self.loaded = embed.prepare_model(self.loaded.params, cfg, dtype, source)
        default = inspect.signature(embed.embed_fasta).parameters["max_tokens_per_batch"].default
        self.budget = args.max_tokens_per_batch or default

    @staticmethod
    def _random_params(config, seed):
        """Random params of the part `protlm.embed` runs (ProtT5: the encoder alone, as a
        T5EncoderModel holds)."""
        import flax.linen as nn  # pylint: disable=import-outside-toplevel
        import jax  # pylint: disable=import-outside-toplevel

        fam = bc.family(config)
        spec = fam.hf()
        batch = fam.batch_shapes(config, fam.default_lengths(8), 1, pack=False)
        params = nn.unbox(jax.jit(lambda r: fam.model(config).init(r, batch)["params"])(
            jax.random.key(seed)))
        return dict(spec.select(params, spec.embed_part))

    def run(self, fasta: pathlib.Path, out_dir: pathlib.Path, tag: str) -> dict:
        stats = self.embed.embed_fasta(
            "bench", fasta, out_dir / f"protlm_{tag}.h5", per_residue=False, per_protein=True,
            max_tokens_per_batch=self.budget, progress=False, loaded=self.loaded)
        return {"seconds": stats["seconds"], "proteins": stats["proteins"],
                "residues": stats["residues"]}

    def memory(self) -> dict:
        return {"peak_device_bytes": bc.jax_peak_bytes()}

    def padding(self, records) -> dict:
        n = [len(self.loaded.family.tokenize(s)[0]) for _, s in records]
        st = self.embed.padding_stats(n, self.budget, self.loaded.max_tokens)
        return {"padded_tokens_per_token": st["padded_tokens_per_token"],
                "attention_cells": st["attention_cells"], "compiled_shapes": st["shapes"]}


# ------------------------------------------------------------------------------------ transformers
class TorchEmbedder:
    """The ProtTrans embedding loop with `T5EncoderModel` / `BertModel`."""

    def __init__(self, config, source, args, dtype):
        import torch  # pylint: disable=import-outside-toplevel
        import transformers  # pylint: disable=import-outside-toplevel

        self.torch, self.args = torch, args
        self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        self.family = bc.family(config)
        spec = self.family.hf()
        cls = getattr(transformers, spec.embed_class)
        torch_dtype = getattr(torch, dtype)
        if source == "huggingface":
            model = cls.from_pretrained(args.model, dtype=torch_dtype)
        else:
            torch.manual_seed(args.seed)
            model = cls(bc.hf_config(config, spec.embed_part)).to(torch_dtype)
        self.model = model.to(self.device).eval()
        self.attn_implementation = getattr(self.model.config, "_attn_implementation", None)

    def _forward(self, batch, results) -> None:
        torch = self.torch
        tokenized = [self.family.tokenize(s) for _, s in batch]
        ids = [list(t) for t, _ in tokenized]
        width = max(map(len, ids))
        input_ids = torch.zeros((len(ids), width), dtype=torch.long)
        for r, row in enumerate(ids):
            input_ids[r, :len(row)] = torch.tensor(row)
        input_ids = input_ids.to(self.device)
        mask = (input_ids != 0).long()
        with torch.no_grad():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        for r, (pid, seq) in enumerate(batch):
            off = tokenized[r][1]
            emb = hidden[r, off:off + len(seq)]
            results[pid] = emb.mean(dim=0).float().cpu().numpy()

    def run(self, fasta: pathlib.Path, out_dir: pathlib.Path, tag: str) -> dict:
        import h5py  # pylint: disable=import-outside-toplevel

        from protlm.data.fasta import read_fasta  # pylint: disable=import-outside-toplevel

        t0 = time.time()
        seqs = [(r.id, r.sequence) for r in read_fasta(str(fasta))]
        results = {}
        for batch in self.batches(seqs):
            self._forward(batch, results)
        with h5py.File(out_dir / f"transformers_{tag}.h5", "w") as f:
            for pid, emb in results.items():
                f.create_dataset(pid.replace("/", "_").replace(".", "_"), data=emb)
        return {"seconds": time.time() - t0, "proteins": len(results),
                "residues": sum(len(s) for _, s in seqs)}

    def batches(self, seqs):
        """The ProtTrans batching: sorted longest first, closed at max_batch / max_residues / a long one."""
        a = self.args
        seqs = sorted(seqs, key=lambda x: len(x[1]), reverse=True)
        batch = []
        for idx, (pid, seq) in enumerate(seqs):
            batch.append((pid, seq))
            n_res = sum(len(s) for _, s in batch) + len(seq)
            if (len(batch) >= a.max_batch or n_res >= a.max_residues or idx == len(seqs) - 1
                    or len(seq) > a.max_seq_len):
                yield batch
                batch = []

    def memory(self) -> dict:
        return {"peak_device_bytes": bc.torch_peak_bytes()}

    def padding(self, records) -> dict:
        real = padded = cells = 0
        for batch in self.batches(records):
            n = [len(self.family.tokenize(s)[0]) for _, s in batch]
            real, padded, cells = real + sum(n), padded + max(n) * len(n), cells + max(n) ** 2 * len(n)
        return {"padded_tokens_per_token": padded / real, "attention_cells": cells}


def make(side, config, source, args, dtype):
    return (ProtlmEmbedder if side == "protlm" else TorchEmbedder)(config, source, args, dtype)


# ------------------------------------------------------------------------------------ throughput
def measure(args) -> dict:
    dtype = resolve_dtype(args.dtype)
    config, source = load_config(args, dtype)
    records = proteins(args)
    sides = [args.only] if args.only else list(SIDES)
    out = {"benchmark": "embed", "model": args.model, "model_source": source,
           "family": bc.family(config).name, "dtype": dtype, "proteins": len(records),
           "residues": sum(len(s) for _, s in records),
           "max_length": max(len(s) for _, s in records), **bc.run_header()}
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        tmp = pathlib.Path(tmp)
        if "protlm" in sides and args.compilation_cache != "none":
            bc.enable_compilation_cache(args.compilation_cache or tmp / "jax_cache")
        out["compilation_cache"] = args.compilation_cache != "none"
        fasta = write_fasta(tmp / "proteins.fasta", records)
        embedders, cold = {}, {}
        for side in sides:
            if side == "transformers":
                bc.torch_peak_bytes(reset=True)
            embedders[side] = make(side, config, source, args, dtype)
            cold[side] = embedders[side].run(fasta, tmp, "warmup")["seconds"]
        rss = bc.RssPeaks()
        runs = {s: [] for s in sides}
        for r in range(args.rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                rss(side)
                runs[side].append(embedders[side].run(fasta, tmp, f"timed{r}"))
        peaks = rss.finish()
    for side in sides:
        secs = bc.median([x["seconds"] for x in runs[side]])
        res = runs[side][0]["residues"]
        out[side] = {"seconds": secs, "seconds_rounds": [x["seconds"] for x in runs[side]],
                     "cold_seconds": cold[side], "residues_per_second": res / secs,
                     "proteins_per_second": runs[side][0]["proteins"] / secs,
                     "peak_rss_bytes": peaks.get(side), **embedders[side].memory(),
                     **embedders[side].padding(records)}
    if "transformers" in embedders:
        out["transformers"]["attn_implementation"] = embedders["transformers"].attn_implementation
    if "protlm" in embedders:
        out["protlm"]["max_tokens_per_batch"] = embedders["protlm"].budget
    out["ratio"] = (out["protlm"]["residues_per_second"] / out["transformers"]["residues_per_second"]
                    if len(sides) == 2 else None)
    return out


# ------------------------------------------------------------------------------------ probe
def probe_one(args) -> dict:
    """Child process: embed one protein of `--_probe_length` residues with one side."""
    dtype = resolve_dtype(args.dtype)
    config, source = load_config(args, dtype)
    base = proteins(argparse.Namespace(**{**vars(args), "limit": 50}))
    seed_seq = max((s for _, s in base), key=len)
    seq = (seed_seq * (args._probe_length // len(seed_seq) + 1))[:args._probe_length]
    with tempfile.TemporaryDirectory(prefix="bench_probe_") as tmp:
        tmp = pathlib.Path(tmp)
        fasta = write_fasta(tmp / "one.fasta", [("probe", seq)])
        emb = make(args._probe_side, config, source, args, dtype)
        t = emb.run(fasta, tmp, "probe")
        return {"ok": True, "seconds": t["seconds"], **emb.memory()}


def _limit_memory(gb: float):
    def apply():
        import resource  # pylint: disable=import-outside-toplevel
        limit = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def _try_length(args, argv, side: str, length: int, on_gpu: bool) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--_probe_side", side,
           "--_probe_length", str(length)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          preexec_fn=None if on_gpu else _limit_memory(args.probe_memory_gb))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = proc.stderr.strip().splitlines()
    return {"ok": False, "returncode": proc.returncode, "error": err[-1][:300] if err else ""}


def max_length_probe(args, argv) -> dict:
    """Longest protein per side: doubling, then bisection, one child process per attempt."""
    import torch  # pylint: disable=import-outside-toplevel

    on_gpu = torch.cuda.is_available()
    argv = [a for a in argv if a != "--max_length_probe"]
    out = {"benchmark": "embed_max_length", "model": args.model, "dtype": resolve_dtype(args.dtype),
           "probe_max": args.probe_max, **bc.run_header()}
    for side in ([args.only] if args.only else SIDES):
        attempts, ok, bad, n = [], 0, None, args.probe_start
        while True:
            r = _try_length(args, argv, side, n, on_gpu)
            attempts.append({"length": n, **r})
            if r["ok"]:
                ok = n
                if n >= args.probe_max:
                    break
                n = min(2 * n, args.probe_max)
            else:
                bad = n
                break
        while bad is not None and bad - ok > args.probe_resolution:
            mid = (ok + bad) // 2
            r = _try_length(args, argv, side, mid, on_gpu)
            attempts.append({"length": mid, **r})
            ok, bad = (mid, bad) if r["ok"] else (ok, mid)
        out[side] = {"max_length": ok, "first_failure": bad, "reached_probe_max": ok >= args.probe_max,
                     "attempts": attempts}
    return out


# ------------------------------------------------------------------------------------ memory
def attention_memory(args) -> dict:
    """XLA's compiled temp memory of one encoder self-attention core at a length, dense vs blocked.

    Inputs are abstract (`jax.ShapeDtypeStruct`), so nothing is allocated: this shows on any
    machine whether the `[heads, L, L]` logits, bias and mask of the dense core fit the device.
    """
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from protlm.layers import blocked_attention as ba  # pylint: disable=import-outside-toplevel
    from protlm.layers.attention import (dot_product_attention,  # pylint: disable=import-outside-toplevel
                                         make_attention_mask)
    from protlm.layers.relative_position import RelativePositionBiases  # pylint: disable=import-outside-toplevel

    dtype = resolve_dtype(args.dtype)
    config, _ = load_config(args, dtype)
    if not hasattr(config, "relative_attention_num_buckets"):
        raise SystemExit("--attention_memory_length: models with a T5 relative position bias only")
    n, heads, hd = args.attention_memory_length, config.num_heads, config.head_dim
    buckets, dist = config.relative_attention_num_buckets, config.relative_attention_max_distance
    act = jnp.dtype(dtype)
    qkv = jax.ShapeDtypeStruct((1, n, heads, hd), act)
    shapes = (qkv, qkv, qkv, jax.ShapeDtypeStruct((heads, buckets), jnp.float32),
              jax.ShapeDtypeStruct((1, n), bool))
    block = args.attention_block_size or 512
    key_block = args.attention_key_block_size or 4 * block

    def dense(q, k, v, table, valid):
        pos = jnp.arange(n)[None]
        bias = RelativePositionBiases(buckets, dist, heads).apply(
            {"params": {"rel_embedding": table}}, pos, pos)
        return dot_product_attention(q, k, v, bias, make_attention_mask(None, valid), dtype=act)

    def blocked(q, k, v, table, valid):
        pos = jnp.arange(n)[None]
        bias = ba.relative_bias_from_params(table, pos, pos, bidirectional=True,
                                            num_buckets=buckets, max_distance=dist)
        return ba.blocked_dot_product_attention(q, k, v, bias, ba.MaskSpec(valid), dtype=act,
                                                query_block=block, key_block=key_block)

    out = {"benchmark": "attention_memory", "model": args.model, "dtype": dtype, "length": n,
           "heads": heads, "head_dim": hd, "query_block": block, "key_block": key_block,
           **bc.run_header()}
    for name, fn in (("dense", dense), ("blocked", blocked)):
        analysis = jax.jit(fn).lower(*shapes).compile().memory_analysis()
        out[name] = None if analysis is None else {
            "temp_bytes": int(analysis.temp_size_in_bytes),
            "argument_bytes": int(analysis.argument_size_in_bytes),
            "output_bytes": int(analysis.output_size_in_bytes)}
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args._probe_side:
        bc.emit(probe_one(args))
    elif args.attention_memory_length:
        bc.emit(attention_memory(args))
    elif args.max_length_probe:
        bc.emit(max_length_probe(args, argv))
    else:
        bc.emit(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
