"""``python -m protlm.train``: gin flags -> ``protlm.trainer.train()``.

    python -m protlm.train --gin_file=gin/prot_t5_xl.gin \\
        --gin.MODEL_DIR="'gs://bucket/prot_t5_xl'" --gin.FASTA_PATTERN="'gs://bucket/u50/*.fasta.gz'"

Flags (T5X style):
  --gin_file=F           gin files, in order (repeatable); looked up in --gin_search_paths.
  --gin_bindings=B       extra bindings after the files (repeatable).
  --gin.NAME=VALUE       shorthand for --gin_bindings="NAME=VALUE" (macros: MODEL_DIR,
                         TRAIN_STEPS, BATCH_SIZE, MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS,
                         FASTA_PATTERN, ...). Strings need inner quotes: --gin.MODEL_DIR="'runs/x'".
                         A macro no gin binding reads (a typo) is an error naming the closest one.
  --gin_search_paths=P   comma-separated directories for gin files and includes
                         (default: the current directory and the repository root).
  --dry_run              lower + compile the train step on abstract inputs, report memory, exit.
  --dry_run_devices=N    with --dry_run: emulate N CPU devices (the mesh the report is for).
  --topology=NAME        with --dry_run: compile for a TPU slice with the TPU compiler (needs
                         libtpu: pip install -e ".[tpu]"), e.g. v3:16x32 (v3-1024), v4:4x4x4
                         (v4-128), v5p:4x4x4, v5e:16x16, v6e:16x16. Prints per-chip memory
                         against HBM, FITS / DOES NOT FIT (exit status 2) and a roofline MFU
                         bound; docs/scaling.md has the table for every recipe.
                         Or GPU:N (h100:1 .. h100:8, h200:N): N GPUs of one host, compiled by
                         XLA:GPU without a GPU (needs jax's CUDA plugin, jax-cuda12-plugin);
                         per-GPU memory against JAX's allocator share, FITS / DOES NOT FIT.
  --num_slices=N         with --topology: N slices joined by DCN (data parallel across them).
  --dry_run_report=FILE  write the dry-run report as JSON to FILE.
Multi-host: TPU pods detect themselves with --distributed; GPU/CPU clusters pass
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
Errors a user can fix (bad FASTA, settings, a MODEL_DIR in use) print one line `train: error: ...`
and exit 2; a checkpoint that cannot be written exits 1 (`protlm.cli`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys

from protlm import cli, gin_macros

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
    parser.add_argument("--topology", default="")
    parser.add_argument("--num_slices", type=int, default=1)
    parser.add_argument("--dry_run_report", default="")
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
    if (args.topology or args.num_slices != 1 or args.dry_run_devices) and not args.dry_run:
        parser.error("--topology, --num_slices and --dry_run_devices only apply with --dry_run")
    if args.topology and args.dry_run_devices:
        parser.error("--topology and --dry_run_devices are exclusive (a slice brings its devices)")
    if args.num_slices != 1 and not args.topology:
        parser.error("--num_slices needs --topology")
    if args.topology:
        from protlm.aot import topology
        try:
            topology.platform(args.topology, args.num_slices)
        except ValueError as e:
            parser.error(str(e))
    return args


def _setup_environment(args: argparse.Namespace) -> None:
    """Device emulation for dry runs; must happen before jax is imported."""
    if args.topology:        # the TPU / GPU compiler runs in this process; no device is needed
        os.environ["JAX_PLATFORMS"] = "cpu"
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
    gin_macros.check_command_line_macros(args.gin_bindings)
    if args.dry_run:
        _fill_unused_macros(gin)
    gin.finalize()
    return gin


# Required by the recipes, read by nothing a dry run does (no data is read, nothing written).
DRY_RUN_UNUSED_MACROS = ("MODEL_DIR", "FASTA_PATTERN")


def _fill_unused_macros(gin) -> None:
    """Binds the REQUIRED macros a dry run never reads, so `--dry_run` needs no bucket paths."""
    for name in DRY_RUN_UNUSED_MACROS:
        try:
            value = gin.query_parameter(f"{name}/macro.value")
        except ValueError:        # the gin files do not use this macro
            continue
        if getattr(value, "config_key", None) == ("gin.REQUIRED", "gin.constant"):
            gin.bind_parameter(f"{name}/macro.value", f"<unused by --dry_run: {name}>")


def _save_gin_config(gin, name: str = "config.gin", text: str | None = None) -> None:
    """Write the parsed config (or `text`) to ``MODEL_DIR/<name>`` (process 0, atomically)."""
    import jax
    try:
        model_dir = gin.query_parameter("%MODEL_DIR")
    except (ValueError, KeyError):
        return
    if not isinstance(model_dir, str) or jax.process_index() != 0:
        return
    path = pathlib.Path(model_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
    tmp.write_text(gin.config_str() if text is None else text, encoding="utf-8")
    os.replace(tmp, path)


def train(argv: list[str]) -> dict:
    """Parse flags and gin, then run ``protlm.trainer.train`` (or its dry run)."""
    args = parse_flags(argv)
    _setup_environment(args)
    if args.topology:
        _load_compiler_plugins(args.topology)
    cli.setup_logging()
    _init_distributed(args)
    from protlm import trainer
    gin = _parse_gin(args)
    if not args.dry_run:
        _save_gin_config(gin)
    fn = gin.get_configurable(trainer.train)
    if args.topology:
        result = _topology_dry_run(args, gin, fn)
    else:
        result = fn(dry_run_only=True) if args.dry_run else fn()
    if not args.dry_run:   # what the run used, every default included (T5X's operative config)
        _save_gin_config(gin, "operative_config.gin", gin.operative_config_str())
    if args.dry_run_report:
        _write_json(args.dry_run_report, result)
    return result


def _load_compiler_plugins(name: str) -> None:
    """The compiler a ``--topology`` needs is installed (else a ConfigError with the install
    command); for a GPU topology jax is first imported (which loads its CUDA plugin) with the
    plugin's driver probe kept off the console."""
    from protlm import errors
    from protlm.aot import topology
    gpu = topology.platform(name) == "gpu"
    try:
        topology.require_cuda_plugin() if gpu else topology.require_libtpu()
    except RuntimeError as e:
        raise errors.ConfigError(f"--topology={name}: {e}") from None
    if gpu:
        with topology.quiet_cuda_plugin():
            import jax
            jax.devices()


def _topology_dry_run(args: argparse.Namespace, gin, train_fn) -> dict:
    """``--topology``: the experiment's mesh sizes and rule table on the slice's devices."""
    from protlm import partitioning
    from protlm.aot import topology
    devices = topology.topology_devices(args.topology, args.num_slices)
    try:
        partition = gin.get_configurable(partitioning.PartitionConfig)()
    except ValueError:   # not referenced by the gin files: the defaults
        partition = partitioning.PartitionConfig()
    partition = dataclasses.replace(partition, devices=tuple(devices))
    return dict(train_fn(dry_run_only=True, partition=partition), topology=args.topology,
                num_slices=args.num_slices, rules=partition.rules)


def _write_json(path: str, report: dict) -> None:
    """The dry-run report as JSON, written atomically (temporary name, then rename)."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=True, default=str) + "\n",
                   encoding="utf-8")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    try:
        result = train(sys.argv[1:] if argv is None else argv)
    except Exception as e:  # pylint: disable=broad-except
        code = cli.report(e, "train")
        if code is None:
            raise
        return code
    return exit_code(result)


def exit_code(result: dict) -> int:
    """Print the dry-run summary or the non-finite stop; the process exit code of a run."""
    status = result.get("status")
    if status == "nonfinite":
        print(f"stopped: non-finite loss at step {result['step']}; the last good checkpoint is kept",
              file=sys.stderr)
        return 1
    if status == "dry_run" and "memory" in result:       # --topology: the TPU report
        from protlm.aot import report
        print(report.format_report(result))
        return 2 if result["memory"]["fits"] is False else 0   # None: no verdict (unknown GPU)
    if status == "dry_run":
        gib = 2 ** 30
        print(f"dry run OK on mesh {result['mesh']}: {result['num_params'] / 1e9:.3f} B params; "
              f"per device: params {result['params_bytes_per_device'] / gib:.3f} GiB, optimizer "
              f"state {result['opt_state_bytes_per_device'] / gib:.3f} GiB, XLA temp "
              f"{result.get('compiled_temp_size_in_bytes', 0) / gib:.3f} GiB")
    return 0


if __name__ == "__main__":
    cli.run(main, "train")
