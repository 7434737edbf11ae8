"""Train-step throughput: protlm's jitted train step vs transformers + PyTorch, same batch.

  python tools/bench_train.py --model prot_t5_small --batch 8 --length 512 [--steps 10]
      [--dtype float32|bfloat16] [--optimizer adamw|adafactor] [--only protlm|transformers]
      [--scan_layers] [--remat_policy none|full|minimal|...] [--isolate --rounds 2]

protlm: `protlm.train_step.compile_train_step` (the trainer's own step: donated state, explicit
shardings, gradient-norm clipping, finite check) on one device with `protlm.optimizers.adamw`
(or `adafactor`). transformers: `T5ForConditionalGeneration` / `BertForMaskedLM` built from the
same config (`protlm.hf.config`), `torch.optim.AdamW` (fused where available) with the same
hyper-parameters, weight-decay mask (matrices only) and global-norm clipping, or
`transformers.optimization.Adafactor`. Dtype policy on both sides: float32 master weights;
`bfloat16` = bf16 activations/matmuls (protlm `dtype="bfloat16"`, torch `autocast(bfloat16)`).
Dropout as in the config on both sides (train mode).

The batch is real proteins of the shared pre-training corpus, tokenised with protlm's tables
(ProtT5: span denoising, span length 1, 15 %; ProtBert: MLM 80/10/10), cropped to `--length`.
`--model` is a preset (random weights) or a protlm / Hugging Face directory (its config; weights
are random too: they do not change the step time).

Timing: compile + `--warmup` steps per side, then `--steps` rounds in which each side runs one
step (alternating order), the median step is reported. Prints one JSON object per measurement:
both sides' step_seconds, tokens_per_second, residues_per_second, tflops_per_device, mfu,
peak memory, and `ratio` = protlm tokens/s / transformers tokens/s (> 1: protlm is faster).
`--isolate` runs each side in its own process (`--only`), alternating `--rounds` times: use it
when both models do not fit on the device together (ProtT5-XL with AdamW on one 80 GB GPU).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402  pylint: disable=wrong-import-position

bc.setup_env()

SIDES = ("protlm", "transformers")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="prot_t5_small", help="preset or model directory")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=512, help="tokens per row (encoder = decoder)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side after compile")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    p.add_argument("--optimizer", choices=("adamw", "adafactor"), default="adamw")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--only", choices=SIDES, default=None)
    p.add_argument("--scan_layers", action="store_true", help="protlm: nn.scan over layers")
    p.add_argument("--remat_policy", default="none", help="protlm: protlm.layers.repeat policy")
    p.add_argument("--dropout_rate", type=float, default=None, help="override the config's")
    p.add_argument("--prng_impl", default=None, choices=("threefry2x32", "rbg", "unsafe_rbg"),
                   help="protlm: PRNG of the dropout key (default: jax's, threefry2x32)")
    p.add_argument("--data_root", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--isolate", action="store_true", help="one process per side (large models)")
    p.add_argument("--rounds", type=int, default=2, help="--isolate: processes per side")
    return p.parse_args(argv)


def _overrides(args) -> dict:
    o = {"dtype": args.dtype, "scan_layers": args.scan_layers, "remat_policy": args.remat_policy}
    if args.dropout_rate is not None:
        o["dropout_rate"] = args.dropout_rate
    return o


def make_batch(config, args):
    """The benchmark batch (numpy), identical for both sides."""
    root = bc.data_root(args.data_root)
    seqs = bc.pretraining_proteins(root, args.batch, min_length=min(64, args.length))
    return bc.objective_batch(config, seqs, args.length, seed=args.seed)


def tokens_and_flops(config, batch) -> tuple[int, float]:
    """(model tokens per step, training FLOPs per token) as the trainer counts them."""
    lengths = bc.family(config).feature_lengths(batch)
    b = next(iter(batch.values())).shape[0]
    return b * config.tokens_per_example(lengths), config.flops_per_token(lengths)


# ------------------------------------------------------------------------------------ protlm
class ProtlmStep:
    """The trainer's jitted step on one device, state initialised in place."""

    def __init__(self, config, batch, args):
        import flax.linen as nn  # pylint: disable=import-outside-toplevel
        import jax  # pylint: disable=import-outside-toplevel

        from protlm import optimizers, partitioning  # pylint: disable=import-outside-toplevel
        from protlm import train_state, train_step  # pylint: disable=import-outside-toplevel

        self._jax, self._train_step = jax, train_step
        model = bc.family(config).model(config)
        schedule = optimizers.constant_schedule(args.learning_rate)
        tx = (optimizers.adamw(schedule) if args.optimizer == "adamw"
              else optimizers.adafactor(schedule))
        self.mesh = partitioning.create_mesh(1, 1, 1, devices=jax.devices()[:1])
        self.rules = partitioning.get_logical_axis_rules("standard")
        self.batch_np, self.size = batch, batch["encoder_input_tokens"].shape[0]
        shapes = {k: jax.ShapeDtypeStruct(v.shape, jax.numpy.int32) for k, v in batch.items()}
        with self.mesh, nn.logical_axis_rules(self.rules):
            _, shardings = train_state.state_shardings(model, tx, shapes, self.mesh, self.rules)
            self.state = train_state.init_state(model, tx, shapes, shardings, self.mesh, self.rules,
                                            args.seed)
            self.bsh = train_step.batch_sharding(self.mesh)
            self.rng = jax.device_put(jax.random.key(args.seed + 1, impl=args.prng_impl),
                                      partitioning.replicated(self.mesh))
            step = train_step.compile_train_step(model, tx, schedule, shardings, self.mesh,
                                              self.rules)
            t0 = time.perf_counter()
            self.compiled = step.lower(self.state, self._device_batch(), self.rng).compile()
            self.compile_seconds = time.perf_counter() - t0
        self.last_loss = math.nan

    def _device_batch(self):
        return self._train_step.make_global_batch(self.batch_np, self.bsh, self.size)

    def __call__(self) -> None:
        self.state, m = self.compiled(self.state, self._device_batch(), self.rng)
        m = self._jax.device_get(m)
        self.last_loss = float(m["loss"]) / max(float(m["weight_sum"]), 1.0)

    def memory(self) -> dict:
        """XLA's static memory analysis of the step and the device's allocator peak."""
        out = {"peak_device_bytes": bc.jax_peak_bytes()}
        analysis = self.compiled.memory_analysis()
        if analysis is not None:
            out["xla_step_bytes"] = int(analysis.argument_size_in_bytes
                                        + analysis.output_size_in_bytes
                                        + analysis.temp_size_in_bytes
                                        - analysis.alias_size_in_bytes)
            out["xla_temp_bytes"] = int(analysis.temp_size_in_bytes)
        return out


# ------------------------------------------------------------------------------------ transformers
class TorchStep:
    """transformers model + torch optimizer step on cuda:0 (else CPU)."""

    def __init__(self, config, batch, args):
        import torch  # pylint: disable=import-outside-toplevel
        import transformers  # pylint: disable=import-outside-toplevel

        self.torch = torch
        self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(args.seed)
        spec = bc.family(config).hf()
        cls = getattr(transformers, spec.classes[spec.default_part])
        self.model = cls(bc.hf_config(config)).to(self.device).train()
        self.torch_inputs = spec.torch_inputs
        self.attn_implementation = getattr(self.model.config, "_attn_implementation", None)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        if args.optimizer == "adamw":
            groups = [{"params": decay, "weight_decay": 0.01},
                      {"params": no_decay, "weight_decay": 0.0}]
            try:
                self.opt = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.98),
                                             eps=1e-8, fused=True)
                self.optimizer_impl = "torch.optim.AdamW(fused=True)"
            except (RuntimeError, TypeError):
                self.opt = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.98),
                                             eps=1e-8)
                self.optimizer_impl = "torch.optim.AdamW"
            self.clip = 1.0
        else:
            from transformers.optimization import Adafactor  # pylint: disable=import-outside-toplevel
            self.opt = Adafactor(self.model.parameters(), lr=args.learning_rate,
                                 scale_parameter=True, relative_step=False, warmup_init=False,
                                 decay_rate=-0.8, clip_threshold=1.0)
            self.optimizer_impl = "transformers.optimization.Adafactor"
            self.clip = None
        self.bf16 = args.dtype == "bfloat16"
        self.batch_np = batch
        self.last_loss = math.nan

    def _inputs(self) -> dict:
        return {k: self.torch.from_numpy(v).to(self.device, non_blocking=True)
                for k, v in self.torch_inputs(self.batch_np).items()}

    def __call__(self) -> None:
        torch = self.torch
        inputs = self._inputs()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(**inputs).loss
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.last_loss = float(loss.detach())   # host sync, like protlm's device_get
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def memory(self) -> dict:
        return {"peak_device_bytes": bc.torch_peak_bytes()}


# ------------------------------------------------------------------------------------ report
def side_report(name, runner, times, config, batch, peak_rss) -> dict:
    """One side's numbers from its step times."""
    from protlm import metrics  # pylint: disable=import-outside-toplevel

    tokens, flops_per_token = tokens_and_flops(config, batch)
    step = bc.median(times)
    if name == "protlm":
        import jax  # pylint: disable=import-outside-toplevel
        kind = jax.devices()[0].device_kind
    else:
        kind = bc.device_info().get("torch_device") or "cpu"
    t = metrics.throughput(tokens, flops_per_token, step, 1, metrics.peak_flops_per_device(kind))
    out = {"step_seconds": step, "step_seconds_min": min(times), "steps_timed": len(times),
           "tokens_per_second": t["tokens_per_second"],
           "residues_per_second": bc.residues_in(config, batch) / step,
           "tflops_per_device": t["tflops_per_device"], "mfu": t["mfu"], "device_kind": kind,
           "peak_rss_bytes": peak_rss, "final_loss": runner.last_loss, **runner.memory()}
    if name == "protlm":
        out["compile_seconds"] = runner.compile_seconds
    else:
        out["attn_implementation"] = runner.attn_implementation
        out["optimizer_impl"] = runner.optimizer_impl
    return out


def measure(args) -> dict:
    """Builds the requested sides, warms up, times interleaved steps; the JSON record."""
    config, source = bc.resolve_model(args.model, **_overrides(args))
    batch = make_batch(config, args)
    sides = [args.only] if args.only else list(SIDES)
    runners, errors = {}, {}
    for name in sides:
        if name == "transformers":
            bc.torch_peak_bytes(reset=True)
        try:
            runners[name] = (ProtlmStep if name == "protlm" else TorchStep)(config, batch, args)
            for _ in range(args.warmup + 1):
                runners[name]()
        except Exception as e:  # pylint: disable=broad-except  (OOM: report it, time the other)
            runners.pop(name, None)
            errors[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
            _free_device_memory()
    rss = bc.RssPeaks()
    times = bc.interleaved(runners, args.steps, between=rss) if runners else {}
    peaks = rss.finish()
    tokens, fpt = tokens_and_flops(config, batch)
    record = {"benchmark": "train", "model": args.model, "model_source": source,
              "family": bc.family(config).name, "batch": args.batch, "length": args.length,
              "dtype": args.dtype, "optimizer": args.optimizer, "scan_layers": args.scan_layers,
              "remat_policy": args.remat_policy, "dropout_rate": config.dropout_rate,
              "prng_impl": args.prng_impl or "default",
              "num_params": config.num_params(), "tokens_per_step": tokens,
              "flops_per_token": fpt, "residues_per_step": bc.residues_in(config, batch),
              **bc.run_header()}
    record.update(errors)
    for name in runners:
        record[name] = side_report(name, runners[name], times[name], config, batch,
                                   peaks.get(name))
    record["ratio"] = (record["protlm"]["tokens_per_second"]
                       / record["transformers"]["tokens_per_second"]
                       if len(runners) == 2 else None)
    return record


def _free_device_memory() -> None:
    """After a failed side (e.g. out of memory), give its device memory back."""
    import gc  # pylint: disable=import-outside-toplevel
    gc.collect()
    try:
        import torch  # pylint: disable=import-outside-toplevel
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def measure_isolated(args, argv) -> dict:
    """Each side in its own process (`--only`), alternating `--rounds` times; medians combined."""
    base = [a for a in argv if a not in ("--isolate",)]
    runs = {s: [] for s in SIDES}
    for r in range(args.rounds):
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), *base, "--only", side],
                                  capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            rec = json.loads(lines[-1]) if lines else {}
            if proc.returncode or side not in rec or "error" in rec[side]:
                err = rec.get(side, {}).get("error") or proc.stderr.strip()[-500:]
                rec = {side: {"error": f"rc {proc.returncode}: {err}"}}
            runs[side].append(rec)
    record = next((dict(r) for r in runs["protlm"] + runs["transformers"] if "benchmark" in r),
                  {"benchmark": "train"})
    for side in SIDES:
        ok = [r for r in runs[side] if "error" not in r[side]]
        if not ok:
            record[side] = runs[side][-1][side]
            continue
        ok.sort(key=lambda r: r[side]["step_seconds"])
        record[side] = ok[len(ok) // 2][side]   # the round with the median step time
        record[side]["step_seconds_rounds"] = [r[side]["step_seconds"] for r in ok]
    record["isolated_rounds"] = args.rounds
    both = all("tokens_per_second" in record[s] for s in SIDES)
    record["ratio"] = (record["protlm"]["tokens_per_second"]
                       / record["transformers"]["tokens_per_second"] if both else None)
    return record


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.isolate and not args.only:
        bc.emit(measure_isolated(args, argv))
    else:
        bc.emit(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
