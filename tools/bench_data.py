"""Benchmark the data pipeline: residues/s of each pretraining task on one CPU core, vs a pod host.

Pins the process to one core, limits TensorFlow (op and tf.data thread pools) to 1 thread, builds
`protlm.data.pipeline.get_dataset` for each task over the data (default: the shared pretraining
corpus; a FASTA glob is converted to TFRecord shards once, before timing), skips `--warmup_batches`
(shuffle buffer fill, tracing) and times `--batches` batches. Residues = cropped source residues
that end up in the batches.

It compares the ProtT5 task's rate with what one host of the paper's ProtT5-XL run consumes:
a TPU v3-1024 pod has 128 hosts of 8 TensorCores (4 chips); at an assumed model FLOPs utilisation
(`--assumed_mfu`, default 0.5: stated, not measured) of the v3 peak (123 TFLOP/s per chip, bf16,
`protlm.metrics`) a host trains `8 x peak x MFU / flops_per_example` examples/s of the XL config
(`protlm.models.get_config("prot_t5_xl").flops_per_example`, inputs = targets = 512), each of
which holds up to 511 residues. `ratio` = measured residues/s per core / that consumption.

  python tools/bench_data.py [--fasta_pattern GLOB_OR_SHARD_DIR] [--batch_size 32] [--length 512]

Prints one JSON object: {"tasks": {name: {"residues_per_s", "examples_per_s", ...}},
"pod_host": {...consumption...}, "ratio": ..., "config": {...}}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

_TASK_LENGTHS = {
    "prott5_span_denoising": lambda n: {"inputs": n, "targets": n},
    "prott5_span_corruption": lambda n: {"inputs": n, "targets": n // 4},
    "protbert_mlm": lambda n: {"inputs": n},
}


def _residues(task: str, batch) -> tuple[int, int]:
    """(residues, examples) in a batch, from the side that holds the full cropped source."""

    from protlm.data import tokens as tok  # pylint: disable=import-outside-toplevel

    if task == "protbert_mlm":
        t = batch["encoder_target_tokens"]
        return int((t >= tok.PROTBERT_MASK_ID + 1).sum()), int((t == tok.PROTBERT_CLS_ID).sum())
    is_res = lambda x: (x >= 3) & (x < tok.PROTT5_LAST_SENTINEL_ID)  # noqa: E731
    if task == "prott5_span_denoising":
        t = batch["decoder_target_tokens"]
        return int(is_res(t).sum()), int((t == tok.PROTT5_EOS_ID).sum())
    i, t = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
    return int(is_res(i).sum() + is_res(t).sum()), int((t == tok.PROTT5_EOS_ID).sum())


def pod_host_consumption(assumed_mfu: float, model: str = "prot_t5_xl", length: int = 512,
                         devices_per_host: int = 8, device_kind: str = "TPU v3") -> dict:
    """Residues/s one host of a TPU v3 pod consumes training `model` at `assumed_mfu`."""
    from protlm import metrics, models  # pylint: disable=import-outside-toplevel

    config = models.get_config(model)
    flops = float(config.flops_per_example({"inputs": length, "targets": length}))
    peak = metrics.peak_flops_per_device(device_kind) * devices_per_host
    examples = peak * assumed_mfu / flops
    return {"model": model, "feature_lengths": {"inputs": length, "targets": length},
            "flops_per_example": flops, "device_kind": device_kind, "devices_per_host": devices_per_host,
            "peak_flops_per_host": peak, "assumed_mfu": assumed_mfu,
            "examples_per_s": round(examples, 2), "residues_per_s": round(examples * (length - 1))}


def bench(fasta_pattern: str | None, batch_size: int, length: int, batches: int, warmup: int, pack: bool,
          tasks: list[str], shuffle_buffer_size: int = 4096) -> dict:
    """Runs the benchmark and returns the JSON-able result."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    from protlm.data import pipeline  # pylint: disable=import-outside-toplevel
    from protlm.data.tasks import register_tasks  # pylint: disable=import-outside-toplevel

    register_tasks(fasta_pattern=fasta_pattern, shuffle_buffer_size=shuffle_buffer_size)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.cpu_budget = 1
    results = {}
    for task in tasks:
        ds = pipeline.get_dataset(task, _TASK_LENGTHS[task](length), batch_size, seed=0, pack=pack).with_options(options)
        it = ds.as_numpy_iterator()
        t0 = time.perf_counter()
        for _ in range(warmup):
            next(it)
        warm_s = time.perf_counter() - t0
        residues = examples = 0
        t0 = time.perf_counter()
        for i in range(batches):
            r, e = _residues(task, next(it))
            residues, examples = residues + r, examples + e
            if (i + 1) % max(1, batches // 5) == 0:
                el = time.perf_counter() - t0
                print(f"[{task}] {i + 1}/{batches} batches, {residues / el:,.0f} residues/s, "
                      f"ETA {el / (i + 1) * (batches - i - 1):.0f} s", file=sys.stderr)
        secs = time.perf_counter() - t0
        results[task] = {
            "residues_per_s": round(residues / secs),
            "examples_per_s": round(examples / secs, 1),
            "batches_per_s": round(batches / secs, 2),
            "residues": residues,
            "examples": examples,
            "seconds": round(secs, 2),
            "warmup_seconds": round(warm_s, 2),
            "feature_lengths": _TASK_LENGTHS[task](length),
        }
    return {"tasks": results, "config": {"batch_size": batch_size, "length": length, "batches": batches,
                                          "warmup_batches": warmup, "pack": pack, "cpu_cores": 1,
                                          "shuffle_buffer_size": shuffle_buffer_size}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fasta_pattern", default=None,
                        help="FASTA glob or shard directory (default: the shared pretraining corpus)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--warmup_batches", type=int, default=20)
    parser.add_argument("--no_pack", action="store_true")
    parser.add_argument("--tasks", default=",".join(_TASK_LENGTHS))
    parser.add_argument("--shuffle_buffer_size", type=int, default=4096)
    parser.add_argument("--assumed_mfu", type=float, default=0.5,
                        help="model FLOPs utilisation assumed for the v3-1024 ProtT5-XL host (stated, not measured)")
    args = parser.parse_args(argv)
    out = bench(args.fasta_pattern, args.batch_size, args.length, args.batches, args.warmup_batches,
                not args.no_pack, args.tasks.split(","), args.shuffle_buffer_size)
    out["pod_host"] = pod_host_consumption(args.assumed_mfu)
    t5 = out["tasks"].get("prott5_span_denoising")
    if t5:
        out["ratio"] = round(t5["residues_per_s"] / out["pod_host"]["residues_per_s"], 2)
    print(json.dumps(out, indent=1))
    if t5:
        print(f"prott5_span_denoising: {t5['residues_per_s']:,} residues/s on one core; one v3-1024 host of "
              f"ProtT5-XL consumes {out['pod_host']['residues_per_s']:,} residues/s at MFU {args.assumed_mfu:.0%}: "
              f"ratio {out['ratio']:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
