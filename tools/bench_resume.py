"""Benchmark resuming the input pipeline: restore time at step 100 vs step 20,000 (quickstart data).

Builds the training stream of `gin/quickstart.gin` (task, feature lengths, batch size, packing,
seed) over the quickstart corpus, runs it once without interruption and saves its position
(`BatchStream.save`, the tf.data iterator checkpoint the trainer writes per host) at each
`--steps`. Then, `--repeats` times per saved step, it opens a fresh stream, restores the position
and takes the first batch (`resume_seconds`, median), and checks that the next `--check_batches`
batches equal the uninterrupted stream's. `replay_seconds` is the time the uninterrupted stream
took to reach the step: what resuming by re-reading (`ds.skip(step)`, the old way) costs at least.

  python tools/bench_resume.py [--fasta_pattern /usr/share/doc/mmseqs2/example-data/DB.fasta.gz]
      [--steps 100,20000] [--repeats 3] [--check_batches 3]

Prints one JSON object: {"steps": {step: {"resume_seconds", "replay_seconds", "state_bytes",
"batches_equal", ...}}, "resume_ratio": last / first, "within_2x": bool, "config": {...}}.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_FASTA = "/usr/share/doc/mmseqs2/example-data/DB.fasta.gz"


def quickstart_data_config() -> dict:
    """Task, lengths, batch size, packing and seed of gin/quickstart.gin (parsed with gin)."""
    import gin  # pylint: disable=import-outside-toplevel

    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / "gin" / "quickstart.gin")], ["MODEL_DIR = 'unused'"])
    return {"task": gin.query_parameter("%MIXTURE_OR_TASK_NAME"),
            "feature_lengths": dict(gin.query_parameter("%TASK_FEATURE_LENGTHS")),
            "batch_size": gin.query_parameter("%BATCH_SIZE"), "pack": gin.query_parameter("%PACK"),
            "seed": gin.query_parameter("%SEED")}


def _same(a: list[dict], b: list[dict]) -> bool:
    import numpy as np  # pylint: disable=import-outside-toplevel

    return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def _dir_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def bench(fasta_pattern: str, steps: list[int], repeats: int, check_batches: int) -> dict:
    from protlm.data import pipeline  # pylint: disable=import-outside-toplevel
    from protlm.data.tasks import register_tasks  # pylint: disable=import-outside-toplevel

    cfg = quickstart_data_config()
    register_tasks(fasta_pattern=fasta_pattern)

    def open_stream():
        return pipeline.open_stream(cfg["task"], cfg["feature_lengths"], cfg["batch_size"], seed=cfg["seed"],
                                    pack=cfg["pack"])

    t0 = time.perf_counter()
    next(open_stream())                           # converts the FASTA once (cached), traces the graph
    setup_s = time.perf_counter() - t0
    root = tempfile.mkdtemp(prefix="bench_resume_")
    results, reference = {}, {}
    stream, position, replay, t_last = open_stream(), 0, 0.0, time.perf_counter()
    for target in sorted(steps):
        while position < target:
            next(stream)
            position += 1
            if position % 2000 == 0:
                rate = position / (replay + time.perf_counter() - t_last)
                print(f"[uninterrupted] batch {position:,}/{max(steps):,}, {rate:.0f} batches/s, "
                      f"ETA {(max(steps) - position) / rate:.0f} s", file=sys.stderr)
        replay += time.perf_counter() - t_last
        state = os.path.join(root, str(target))
        os.makedirs(state)
        t = time.perf_counter()
        stream.save(state)
        save_s = time.perf_counter() - t
        reference[target] = [next(stream) for _ in range(check_batches)]
        position += check_batches   # the check batches are not counted as replay time
        results[target] = {"replay_seconds": round(replay, 3), "save_seconds": round(save_s, 3),
                           "state_bytes": _dir_bytes(state)}
        t_last = time.perf_counter()
    for _ in range(repeats):
        for target in sorted(steps):
            t = time.perf_counter()
            resumed = open_stream()
            resumed.restore(os.path.join(root, str(target)), target)
            first = next(resumed)
            results[target].setdefault("resume_runs", []).append(round(time.perf_counter() - t, 3))
            rest = [next(resumed) for _ in range(check_batches - 1)]
            results[target]["batches_equal"] = results[target].get("batches_equal", True) and \
                _same([first] + rest, reference[target])
            resumed.close()
    fresh = []
    for _ in range(repeats):
        t = time.perf_counter()
        next(open_stream())
        fresh.append(time.perf_counter() - t)
    for r in results.values():
        r["resume_seconds"] = round(statistics.median(r["resume_runs"]), 3)
    first, last = results[min(steps)]["resume_seconds"], results[max(steps)]["resume_seconds"]
    return {"steps": {str(k): v for k, v in sorted(results.items())},
            "resume_ratio": round(last / first, 3), "within_2x": bool(last <= 2 * first),
            "fresh_start_seconds": round(statistics.median(fresh), 3),
            "first_start_seconds_incl_fasta_conversion": round(setup_s, 3),
            "config": {**cfg, "fasta_pattern": fasta_pattern, "repeats": repeats,
                       "check_batches": check_batches, "cpu_count": os.cpu_count(),
                       "load_average_1min": round(os.getloadavg()[0], 2)}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fasta_pattern", default=DEMO_FASTA, help="the quickstart corpus (or any FASTA / shards)")
    parser.add_argument("--steps", default="100,20000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check_batches", type=int, default=3)
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    if len(steps) < 2 or min(steps) < 1 or args.check_batches < 1:
        parser.error("--steps needs at least two positive steps; --check_batches >= 1")
    out = bench(args.fasta_pattern, steps, args.repeats, args.check_batches)
    print(json.dumps(out, indent=1))
    s = out["steps"]
    print(f"resume at step {min(steps):,}: {s[str(min(steps))]['resume_seconds']:.2f} s, at step "
          f"{max(steps):,}: {s[str(max(steps))]['resume_seconds']:.2f} s (ratio {out['resume_ratio']:.2f}); "
          f"replaying to step {max(steps):,} took {s[str(max(steps))]['replay_seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
