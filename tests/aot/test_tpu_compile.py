"""The TPU compiler on a v4-8 / v5e-4 topology: collective bytes, scanned FLOPs, the CLI report.

Each case compiles a tiny program for a small slice (seconds); `make test` installs libtpu.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from protlm import models, optimizers, partitioning, train_state, train_step
from protlm.aot import counts, hlo
from tests.trainer import subproc

pytestmark = pytest.mark.libtpu


def _counts(compiled, num_devices):
    return counts.count_step(hlo.parse_module(compiled.as_text()), num_devices)


def test_collective_bytes_of_a_sharded_matmul(v4_devices):
    # x [64, 256] rows over 4 devices, w [256, 512] rows over the same axis: each device
    # must gather the 3 shards of w it lacks (3 x 64 x 512 bf16) and multiply [16,256]x[256,512].
    # (bf16: with f32 operands XLA:TPU converts w to bf16 before gathering it.)
    mesh = Mesh(np.asarray(v4_devices), ("d",))
    x = jax.ShapeDtypeStruct((64, 256), jnp.bfloat16, sharding=NamedSharding(mesh, P("d")))
    w = jax.ShapeDtypeStruct((256, 512), jnp.bfloat16, sharding=NamedSharding(mesh, P("d")))
    fn = jax.jit(lambda a, b: a @ b, out_shardings=NamedSharding(mesh, P("d")))
    step = _counts(fn.lower(x, w).compile(), 4)
    by_kind = step.collective_bytes()
    assert by_kind["all-gather"] == 3 * 64 * 512 * 2
    assert sum(by_kind.values()) == by_kind["all-gather"]
    (gather,) = [c for c in step.collectives if c.kind == "all-gather"]
    assert sorted(gather.groups[0]) == [0, 1, 2, 3] and gather.calls == 1
    assert step.matmul_flops == 2 * 16 * 256 * 512


def _train_step_counts(devices, scan: bool, remat: str, length: int = 32, **config):
    cfg = models.get_config("prot_t5_tiny", scan_layers=scan, remat_policy=remat,
                            **{"num_encoder_layers": 3, "num_decoder_layers": 3, **config})
    model = models.get_model(cfg)
    mesh = partitioning.create_mesh(data=2, model=2, devices=devices)
    rules = partitioning.get_logical_axis_rules("standard")
    tx = optimizers.adafactor(learning_rate=optimizers.constant_schedule(1e-3))
    lengths = {"inputs": length, "targets": length}
    shapes = models.get_family(cfg).batch_shapes(cfg, lengths, 8, pack=True)
    abstract, shardings = train_state.state_shardings(model, tx, shapes, mesh, rules)
    bsh = train_step.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bsh) for k, v in shapes.items()}
    key = jax.eval_shape(lambda: jax.random.key(0))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=partitioning.replicated(mesh))
    fn = train_step.compile_train_step(model, tx, optimizers.constant_schedule(1e-3), shardings,
                                       mesh, rules)
    with partitioning.activate(mesh, rules):
        compiled = fn.lower(abstract, batch, key).compile()
    xla = compiled.cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    model_flops = 8 * cfg.flops_per_example(lengths) / 4
    return _counts(compiled, 4), xla, model_flops


@pytest.mark.parametrize("remat", ["none", "full"])
def test_scanned_flops_equal_unrolled(v4_devices, remat):
    scanned, xla_scanned, model_flops = _train_step_counts(v4_devices, True, remat)
    unrolled, xla_unrolled, _ = _train_step_counts(v4_devices, False, remat)
    assert scanned.unknown_loops == ()
    assert scanned.matmul_flops == pytest.approx(unrolled.matmul_flops, rel=1e-6)
    # XLA's own count sees each of the 3 scanned layers once; the unrolled one all of them.
    assert xla_scanned["flops"] < 0.8 * xla_unrolled["flops"]
    # Against the model's FLOPs: the causal decoder's masked half is computed (dense
    # attention); full remat adds a forward pass of the layers.
    ratio = scanned.matmul_flops / model_flops
    assert (1.0 < ratio < 1.15) if remat == "none" else (1.25 < ratio < 1.45)


def test_hbm_bytes_are_a_lower_bound_of_xlas_count(v4_devices):
    # Without loops XLA's own count covers the whole program. protlm reads each operand once
    # and writes each result once, without tile padding: a lower bound on the traffic (XLA's
    # TPU cost model adds re-reads across matmul tiles; 0.57 of it here).
    step, xla, _ = _train_step_counts(v4_devices, False, "none", length=128, emb_dim=256,
                                      num_heads=2, head_dim=128, mlp_dim=512, dtype="bfloat16")
    assert 0.4 < step.hbm_bytes / xla["bytes accessed"] <= 1.0
    assert 0.8 < step.matmul_flops / xla["flops"] <= 1.0       # XLA adds elementwise FLOPs


# No MODEL_DIR: a dry run fills the REQUIRED macros it never reads (MODEL_DIR, FASTA_PATTERN).
TINY = ["--gin_file=gin/models/prot_t5_tiny.gin", "--gin_file=gin/runs/pretrain.gin",
        "--gin.MIXTURE_OR_TASK_NAME='prott5_span_denoising'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}", "--gin.TRAIN_STEPS=1",
        "--gin.MESH_MODEL=2", "--gin.models.get_config.scan_layers=True", "--dry_run"]


def test_cli_reports_memory_verdict_and_bound(libtpu, tmp_path):
    report_path = tmp_path / "report.json"
    proc = subproc.run(["protlm.train", *TINY, "--gin.BATCH_SIZE=16", "--topology=v4:2x2x1",
                        f"--dry_run_report={report_path}"], timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "FITS:" in proc.stdout and "MFU <=" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["topology"] == "v4:2x2x1" and report["device_kind"] == "TPU v4"
    assert report["mesh"] == {"data": 2, "fsdp": 1, "model": 2}
    mem = report["memory"]
    assert mem["fits"] and mem["hbm_bytes"] == 32 * 2 ** 30 > mem["hbm_usable_bytes"]
    assert 0 < mem["params_bytes"] < mem["total_bytes"] < mem["hbm_usable_bytes"]
    assert mem["temp_bytes"] > 0
    c, r = report["counts"], report["roofline"]
    assert c["matmul_flops"] > c["model_flops"] > 0
    assert set(c["collective_bytes"]) == set(counts.COLLECTIVE_KINDS)
    assert c["collective_bytes"]["all-reduce"] > 0          # model-parallel partial sums
    assert r["compute_seconds"] > 0 and r["hbm_seconds"] > 0 and r["ici_seconds"] > 0
    assert r["step_seconds_overlap"] == max(r["compute_seconds"], r["hbm_seconds"],
                                            r["ici_seconds"], r["dcn_seconds"])
    assert 0 < r["mfu_bound_no_overlap"] < r["mfu_bound"] <= 1.0
    assert report["compile_seconds"] > 0


def test_cli_too_large_batch_does_not_fit(libtpu, tmp_path):
    proc = subproc.run(["protlm.train", *TINY, "--gin.BATCH_SIZE=131072",
                        "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 512}",
                        "--topology=v5e:2x2", f"--dry_run_report={tmp_path / 'r.json'}"],
                       timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "DOES NOT FIT" in proc.stdout
    mem = json.loads((tmp_path / "r.json").read_text())["memory"]
    assert not mem["fits"] and mem["total_bytes"] > mem["hbm_usable_bytes"]


def test_finetune_dry_run_on_a_slice_uses_the_wrappers_flops(libtpu, tmp_path):
    """A fine-tuning run (gin/runs/finetune.gin, a task head) compiles for a TPU slice; the MFU
    bound's model FLOPs are the fine-tuning model's own (LoRA 4N per token, full 6N), not the
    pretraining objective's (the fine-tuning batch has no decoder features)."""
    reports = {}
    for mode in ("full", "lora"):
        path = tmp_path / f"{mode}.json"
        proc = subproc.run(["protlm.train", "--gin_file=gin/runs/finetune.gin",
                            "--gin_file=gin/models/prot_t5_tiny.gin", "--gin.INIT_CHECKPOINT=None",
                            "--gin.TRAIN_STEPS=10", f"--gin.MODEL_DIR='{tmp_path / mode}'",
                            f"--gin.MODE='{mode}'", "--gin.MAX_LENGTH=64", "--gin.BATCH_SIZE=8",
                            "--dry_run", "--topology=v4:2x2x1", f"--dry_run_report={path}"],
                           timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        reports[mode] = json.loads(path.read_text())
    full, lora = reports["full"], reports["lora"]
    assert full["memory"]["fits"] and lora["memory"]["fits"]
    assert lora["counts"]["model_flops"] / full["counts"]["model_flops"] == pytest.approx(4 / 6)
    # tiny model: the CNN head (trained in both modes) is a large share of what LoRA keeps
    assert lora["memory"]["opt_state_bytes"] < full["memory"]["opt_state_bytes"] / 2
    assert list(full["batch_shapes"]) == list(lora["batch_shapes"])
    assert "decoder_target_tokens" not in full["batch_shapes"]
