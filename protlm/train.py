"""``python -m protlm.train``: gin flags -> ``protlm.trainer.train()``.

    python -m protlm.train --gin_file=gin/prot_t5_xl.gin \\
        --gin.MODEL_DIR="'gs://bucket/prot_t5_xl'" --gin.FASTA_PATTERN="'gs://bucket/u50/*.fasta.gz'"

Flags (T5X style):
  --gin_file=F           gin files, in order (repeatable); looked up in --gin_search_paths.
  --gin_bindings=B       extra bindings after the files (repeatable).
  --gin.NAME=VALUE       shorthand for --gin_bindings="NAME=VALUE" (macros: MODEL_DIR,
                         TRAIN_STEPS, BATCH_SIZE, MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS,
                         FASTA_PATTERN, ...). Strings need inner quotes: --gin.MODEL_DIR="'runs/x'".
  --gin_search_paths=P   comma-separated directories for gin files and includes
                         (default: the current directory and the repository root).
  --dry_run              lower + compile the train step on abstract inputs, report memory, exit.
  --dry_run_devices=N    with --dry_run: emulate N CPU devices (the mesh the report is for).
Multi-host: TPU pods detect themselves with --distributed; GPU/CPU clusters pass
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys

# gin files live in the repository's gin/ and include each other as 'gin/...' (T5X style);
# the repository root is a default search path, so they resolve from any working directory.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_flags(argv: list[str]) -> argparse.Namespace:
    """Parse the command line; ``--gin.NAME=VALUE`` flags become bindings (in order)."""
    parser = argparse.ArgumentParser(prog="python -m protlm.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gin_file", action="append", default=[])
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--gin_search_paths", default="")
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("--dry_run_devices", type=int, default=0)
    parser.add_argument("--distributed", action="store_true",
                        help="jax.distributed.initialize() with auto-detection (TPU pods, SLURM)")
    parser.add_argument("--coordinator_address", default=None)
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    rest, gin_flags = [], []
    for arg in argv:
        if arg.startswith("--gin.") and "=" in arg:
            gin_flags.append(arg[len("--gin."):])
        elif arg.startswith("--gin."):
            parser.error(f"{arg}: write --gin.NAME=VALUE (one argument)")
        else:
            rest.append(arg)
    args = parser.parse_args(rest)
    args.gin_bindings = list(args.gin_bindings) + gin_flags
    if not args.gin_file:
        parser.error("at least one --gin_file is required (e.g. --gin_file=gin/quickstart.gin)")
    return args


def _setup_environment(args: argparse.Namespace) -> None:
    """Device emulation for dry runs; must happen before jax is imported."""
    if args.dry_run and args.dry_run_devices:
        if "jax" in sys.modules:
            raise RuntimeError("--dry_run_devices must be applied before jax is imported")
        os.environ["JAX_PLATFORMS"] = "cpu"
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count="
                                   f"{args.dry_run_devices}").strip()


def _init_distributed(args: argparse.Namespace) -> None:
    import jax
    if args.coordinator_address or (args.num_processes or 1) > 1:
        jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                   num_processes=args.num_processes, process_id=args.process_id)
    elif args.distributed:
        jax.distributed.initialize()


def _parse_gin(args: argparse.Namespace):
    import gin
    paths = [p for p in args.gin_search_paths.split(",") if p] + [".", str(REPO_ROOT)]
    for p in paths:
        gin.add_config_file_search_path(p)
    gin.parse_config_files_and_bindings(args.gin_file, args.gin_bindings,
                                        finalize_config=False)
    gin.finalize()
    return gin


def _save_gin_config(gin) -> None:
    """Write the parsed config to ``MODEL_DIR/config.gin`` (process 0, atomically)."""
    import jax
    try:
        model_dir = gin.query_parameter("%MODEL_DIR")
    except (ValueError, KeyError):
        return
    if not isinstance(model_dir, str) or jax.process_index() != 0:
        return
    path = pathlib.Path(model_dir) / "config.gin"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".config.gin.tmp-{os.getpid()}")
    tmp.write_text(gin.config_str(), encoding="utf-8")
    os.replace(tmp, path)


def train(argv: list[str]) -> dict:
    """Parse flags and gin, then run ``protlm.trainer.train`` (or its dry run)."""
    args = parse_flags(argv)
    _setup_environment(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    _init_distributed(args)
    from protlm import trainer
    gin = _parse_gin(args)
    if not args.dry_run:
        _save_gin_config(gin)
    fn = gin.get_configurable(trainer.train)
    result = fn(dry_run_only=True) if args.dry_run else fn()
    logging.getLogger(__name__).info("gin config:\n%s", gin.operative_config_str())
    return result


def main(argv: list[str] | None = None) -> int:
    return report(train(sys.argv[1:] if argv is None else argv))


def report(result: dict) -> int:
    """Print the dry-run summary or the non-finite stop; the process exit code of a run."""
    status = result.get("status")
    if status == "nonfinite":
        print(f"stopped: non-finite loss at step {result['step']}; the last good checkpoint is kept",
              file=sys.stderr)
        return 1
    if status == "dry_run":
        gib = 2 ** 30
        print(f"dry run OK on mesh {result['mesh']}: {result['num_params'] / 1e9:.3f} B params; "
              f"per device: params {result['params_bytes_per_device'] / gib:.3f} GiB, optimizer "
              f"state {result['opt_state_bytes_per_device'] / gib:.3f} GiB, XLA temp "
              f"{result.get('compiled_temp_size_in_bytes', 0) / gib:.3f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
