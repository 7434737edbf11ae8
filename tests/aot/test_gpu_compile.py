"""XLA:GPU without a GPU (`--dry_run --topology=h100:N`): GPU names, target configs, the report.

The compile cases run `python -m protlm.train` with jax's CUDA plugin on the path
(tests/aot/conftest.py `cuda_aot_env`); each compiles a tiny train step in seconds.
"""
import json

import pytest

from protlm.aot import report as aot_report
from protlm.aot import topology
from tests.aot.test_tpu_compile import TINY
from tests.trainer import subproc

H100_BYTES = 84_929_347_584        # h100_sxm.txtpb device_memory_size (79.1 GiB)
H200_BYTES = 150_754_820_096       # 143,771 MiB


def test_gpu_topology_names():
    assert topology.parse_gpu_topology("h100:8") == ("h100", 8)
    assert topology.parse_gpu_topology(" h200:1 ") == ("h200", 1)
    assert topology.parse_gpu_topology("v4:2x2x1") is None       # a TPU name
    assert topology.parse_gpu_topology("v3:8") is None           # a bad TPU name, not a GPU one
    for bad in ("h100:0", "h100:9", "a100:8", "b200:4"):
        with pytest.raises(ValueError, match="GPU:COUNT"):
            topology.parse_gpu_topology(bad)
    with pytest.raises(ValueError, match="GPU:COUNT with GPU one of"):
        topology.parse_topology("h100:2x8")


def test_target_configs_name_their_device_and_memory():
    assert topology.gpu_memory_bytes("NVIDIA H100 80GB HBM3") == H100_BYTES
    assert topology.gpu_memory_bytes("NVIDIA H200") == H200_BYTES
    assert topology.gpu_memory_bytes("NVIDIA A100-SXM4-80GB") is None
    for gpu in topology.GPU_TARGETS:
        text = topology.gpu_target_config(gpu)
        assert 'platform_name: "CUDA"' in text and "major: 9" in text


class _CompileOnlyGpu:
    device_kind = "NVIDIA H200"

    def memory_stats(self):
        raise RuntimeError("compile-only devices have no allocator")


def test_gpu_memory_is_the_allocators_share(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    assert aot_report.gpu_memory(_CompileOnlyGpu()) == (H200_BYTES, 0.75 * H200_BYTES)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    assert aot_report.gpu_memory(_CompileOnlyGpu()) == (H200_BYTES, 0.9 * H200_BYTES)


def test_missing_cuda_plugin_is_a_config_error_with_the_install_command(monkeypatch):
    from protlm import errors, train
    real = topology.importlib.util.find_spec
    monkeypatch.setattr(topology.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("jax_cuda") else real(name, *a))
    with pytest.raises(errors.ConfigError, match=r'--topology=h100:1: .*pip install '
                                                 r'"jax-cuda12-plugin==\d'):
        train._load_compiler_plugins("h100:1")   # pylint: disable=protected-access


def _gpu_dry_run(env, tmp_path, *flags, name="r.json"):
    path = tmp_path / name
    # TF_CPP_MIN_LOG_LEVEL unset: what a user sees (the suite's environment sets it to 3).
    proc = subproc.run(["protlm.train", *TINY, *flags, f"--dry_run_report={path}"], timeout=300,
                       extra_env={**env, "TF_CPP_MIN_LOG_LEVEL": None})
    report = json.loads(path.read_text()) if path.exists() else None
    return proc, report


@pytest.mark.cuda_aot
def test_cli_compiles_for_two_h100_and_reports_memory(cuda_aot_env, tmp_path):
    proc, report = _gpu_dry_run(cuda_aot_env, tmp_path, "--gin.BATCH_SIZE=16",
                                "--topology=h100:2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert out[0].startswith("GPU dry run: h100:2, 2 x NVIDIA H100 80GB HBM3")
    assert out[-1].startswith("FITS:")
    # the plugin's driver probe (a GPU-less machine) stays off the console
    assert "cuda drivers" not in proc.stderr and "absl::InitializeLog" not in proc.stderr
    assert report["platform"] == "gpu" and report["device_kind"] == "NVIDIA H100 80GB HBM3"
    assert report["mesh"] == {"data": 1, "fsdp": 1, "model": 2}
    mem = report["memory"]
    assert mem["hbm_bytes"] == H100_BYTES and mem["hbm_usable_bytes"] == 0.75 * H100_BYTES
    assert mem["fits"] and mem["temp_bytes"] > 0
    # every buffer the step reads is an argument: the state (params + optimizer) and the batch
    assert mem["argument_bytes"] >= mem["params_bytes"] + mem["opt_state_bytes"] > 0
    assert mem["total_bytes"] >= mem["argument_bytes"] + mem["temp_bytes"] - mem["alias_bytes"]
    assert report["counts"]["model_flops"] > 0 and "roofline" not in report


@pytest.mark.cuda_aot
def test_cli_batch_too_large_for_one_h100_does_not_fit(cuda_aot_env, tmp_path):
    proc, report = _gpu_dry_run(cuda_aot_env, tmp_path, "--gin.BATCH_SIZE=65536",
                                "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 512}",
                                "--gin.MESH_MODEL=1", "--topology=h100:1")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1].startswith("DOES NOT FIT: needs")
    mem = report["memory"]
    assert not mem["fits"] and mem["total_bytes"] > mem["hbm_usable_bytes"]


def test_a_gpu_of_unknown_memory_gets_no_verdict_and_exit_status_0(capsys):
    from protlm import train

    class _Unknown(_CompileOnlyGpu):
        device_kind = "NVIDIA A100-SXM4-80GB"

    capacity, usable = aot_report.gpu_memory(_Unknown())
    assert capacity is None and usable is None
    memory = {"params_bytes": 2 ** 30, "opt_state_bytes": 0, "temp_bytes": 2 ** 30,
              "total_bytes": 2 ** 31, "hbm_bytes": capacity, "hbm_usable_bytes": usable,
              "fits": None}
    result = {"status": "dry_run", "platform": "gpu", "device_kind": _Unknown.device_kind,
              "topology": "", "devices": 1, "mesh": {"data": 1, "fsdp": 1, "model": 1},
              "rules": "standard", "remat_policy": "minimal", "accum_steps": 1,
              "batch_shapes": {"encoder_input_tokens": [8, 512]}, "num_params": 10 ** 9,
              "compile_seconds": 1.0, "counts": {"model_flops": 1e12}, "memory": memory}
    assert train.exit_code(result) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("GPU dry run: the attached GPUs, 1 x NVIDIA A100-SXM4-80GB")
    assert out[-1] == "NO VERDICT: the memory of a NVIDIA A100-SXM4-80GB is unknown"
