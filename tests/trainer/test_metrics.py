"""MFU / throughput arithmetic, the peak table and the metric writer."""
import json
import math

import pytest

from protlm import metrics
from protlm.models import get_config


@pytest.mark.parametrize("kind, peak", [
    ("TPU v4", 275e12), ("TPU v3", 61.5e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("cpu", None), ("Interpreter", None)])
def test_peak_table(kind, peak):
    assert metrics.peak_flops_per_device(kind) == peak


def test_throughput_and_mfu():
    # 1M tokens/step, 6e9 FLOPs/token, 2 s/step on 8 devices of 1 PFLOP/s peak each:
    # 5e5 tokens/s, 3e15 FLOP/s total, 3.75e14 per device = 37.5 % MFU.
    out = metrics.throughput(1e6, 6e9, 2.0, 8, 1e15)
    assert out["tokens_per_second"] == pytest.approx(5e5)
    assert out["tokens_per_second_per_device"] == pytest.approx(6.25e4)
    assert out["tflops_per_device"] == pytest.approx(375.0)
    assert out["mfu"] == pytest.approx(0.375)
    assert math.isnan(metrics.throughput(1e6, 6e9, 2.0, 8, None)["mfu"])
    with pytest.raises(ValueError):
        metrics.throughput(1, 1, 0.0, 8, 1e15)


def test_mfu_of_prot_t5_xl_step_is_plausible():
    """ProtT5-XL at 512+512 on a v3-1024 (512 chips, 1024 devices): the paper-scale step."""
    cfg = get_config("prot_t5_xl")
    flops_per_token = cfg.flops_per_example({"inputs": 512, "targets": 512}) / 1024
    # each token passes either the encoder or the decoder (about half the 2.8 B params each):
    # about 6 x 1.4e9 per token plus attention
    half = cfg.num_params() / 2
    assert 6 * half * 0.95 < flops_per_token < 6 * half * 1.3
    out = metrics.throughput(2048 * 1024, flops_per_token, 1.0, 1024,
                             metrics.peak_flops_per_device("TPU v3"))
    assert 0 < out["mfu"] < 1


def test_format_seconds():
    assert metrics.format_seconds(3725) == "1h02m05s"
    assert metrics.format_seconds(65) == "1m05s"
    assert metrics.format_seconds(float("nan")) == "?"


def test_metric_writer_writes_events_and_jsonl(tmp_path):
    w = metrics.MetricWriter(tmp_path)
    w.write("train", 10, {"loss": 2.5, "mfu": float("nan")})
    w.write("train", 20, {"loss": 2.0, "mfu": 0.5})
    w.close()
    events = list((tmp_path / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    lines = [json.loads(x) for x in (tmp_path / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20] and lines[1]["loss"] == 2.0


def test_step_timer():
    t = metrics.StepTimer(0, 100)
    per_step, eta = t.lap(10)
    assert per_step >= 0 and eta == pytest.approx(per_step * 90)
