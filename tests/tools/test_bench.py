"""tools/bench_train.py, tools/bench_embed.py and their helpers (tools/bench_common.py).

The CLI tests run each benchmark on a tiny preset for 1-2 steps in a subprocess (as a user
would) and check the JSON record; they time nothing.
"""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from protlm import models
from protlm.data import tokens as tok
from tests.conftest import TEST_XLA_FLAGS

TOOLS = pathlib.Path(__file__).resolve().parents[2] / "tools"


def _load(name):
    sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bc = _load("bench_common")
SEQS = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "ACDEFGHIKLMNPQRSTVWYUXBZO" * 3, "MKV"]


def test_t5_batch_is_span_denoising_with_full_targets():
    b = bc.objective_batch(models.get_config("prot_t5_tiny"), SEQS, 40, seed=1)
    assert all(v.shape == (3, 40) and v.dtype == np.int32 for v in b.values())
    for i, s in enumerate(SEQS):
        n = min(len(s), 39) + 1
        tgt = b["decoder_target_tokens"][i]
        assert tgt[n - 1] == tok.PROTT5_EOS_ID and not tgt[n:].any()
        np.testing.assert_array_equal(b["decoder_input_tokens"][i, 1:n], tgt[:n - 1])
        enc = b["encoder_input_tokens"][i, :n]
        sentinel = enc >= tok.PROTT5_LAST_SENTINEL_ID
        np.testing.assert_array_equal(enc[~sentinel], tgt[:n][~sentinel])
        assert b["decoder_loss_weights"][i].sum() == n
    # a crop of the 75-residue protein is a contiguous window of it
    assert tok.decode_prott5(b["decoder_target_tokens"][1]) in "ACDEFGHIKLMNPQRSTVWYXXXXX" * 3


def test_bert_batch_selects_and_masks():
    bert = models.get_config("prot_bert_tiny")
    b = bc.objective_batch(bert, ["L" * 2000] * 4, 512, seed=0)
    w = b["encoder_loss_weights"]
    assert 0.1 < w.sum() / (4 * 510) < 0.2
    assert not w[:, 0].any() and not w[:, 511].any()   # [CLS] / [SEP] never selected
    masked = (b["encoder_input_tokens"] == tok.PROTBERT_MASK_ID)
    assert masked[w == 0].sum() == 0 and 0.7 < masked.sum() / w.sum() < 0.9
    assert (b["encoder_target_tokens"][:, 0] == tok.PROTBERT_CLS_ID).all()
    assert bc.residues_in(bert, b) == 4 * 512


def test_interleaved_alternates_and_counts():
    calls = []
    times = bc.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert len(times["a"]) == len(times["b"]) == 3
    assert bc.median([3.0, 1.0, 2.0]) == 2.0 and math.isnan(bc.median([]))


def test_emit_writes_strict_json(capsys):
    bc.emit({"x": float("nan"), "y": np.float32(1.5), "z": {"w": [np.int64(2)]}})
    assert json.loads(capsys.readouterr().out) == {"x": None, "y": 1.5, "z": {"w": [2]}}


def test_resolve_model_and_hf_config(tmp_path):
    config, source = bc.resolve_model("prot_t5_tiny", dtype="float32", not_a_field=1)
    assert source == "preset" and config.dtype == "float32"
    hf = bc.hf_config(config)
    assert (hf.d_model, hf.num_layers, hf.num_heads, hf.d_ff) == (32, 2, 4, 64)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 30}))
    config, source = bc.resolve_model(str(tmp_path))
    assert source == "huggingface" and bc.family(config).name == "bert"
    with pytest.raises(SystemExit, match="neither a preset"):
        bc.resolve_model(str(tmp_path / "missing"))


def test_peak_rss_is_reported():
    assert bc.peak_rss_bytes() > 0 and bc.rss_bytes() > 0
    peaks = bc.RssPeaks()
    peaks("a")
    _ = np.ones(4_000_000)
    assert peaks.finish()["a"] > 0


def _run(tool, *args, timeout=900):
    env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, JAX_PLATFORMS="cpu")   # one CPU device
    proc = subprocess.run([sys.executable, str(TOOLS / f"{tool}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


@pytest.mark.slow
@pytest.mark.hf
@pytest.mark.parametrize("model", ["prot_t5_tiny", "prot_bert_tiny"])
def test_bench_train_cli(model, data_root):
    rec = _run("bench_train", "--model", model, "--batch", "2", "--length", "32", "--steps", "2",
               "--warmup", "0", "--data_root", str(data_root))
    assert rec["benchmark"] == "train" and rec["model"] == model and rec["tokens_per_step"] > 0
    for side in ("protlm", "transformers"):
        r = rec[side]
        assert r["steps_timed"] == 2 and r["step_seconds"] > 0 and r["tokens_per_second"] > 0
        assert r["tflops_per_device"] > 0 and r["peak_rss_bytes"] > 0
        assert math.isfinite(r["final_loss"])
        assert "mfu" in r   # null on CPU (no peak FLOP/s known)
    assert rec["ratio"] == pytest.approx(
        rec["protlm"]["tokens_per_second"] / rec["transformers"]["tokens_per_second"])
    assert rec["versions"]["jax"] and rec["device"]["jax_platform"] == "cpu"


@pytest.mark.slow
@pytest.mark.hf
def test_bench_embed_cli(data_root):
    rec = _run("bench_embed", "--model", "prot_t5_tiny", "--limit", "6", "--data_root",
               str(data_root))
    assert rec["benchmark"] == "embed" and rec["proteins"] == 6 and rec["dtype"] == "float32"
    for side in ("protlm", "transformers"):
        r = rec[side]
        assert r["residues_per_second"] > 0 and r["proteins_per_second"] > 0
        assert r["seconds"] > 0 and r["cold_seconds"] > 0
    assert rec["ratio"] > 0


@pytest.mark.slow
@pytest.mark.hf
def test_bench_embed_probe_cli(data_root):
    rec = _run("bench_embed", "--model", "prot_t5_tiny", "--max_length_probe", "--only",
               "protlm", "--probe_start", "64", "--probe_max", "128", "--data_root",
               str(data_root))
    assert rec["protlm"]["max_length"] == 128 and rec["protlm"]["reached_probe_max"]
    assert [a["length"] for a in rec["protlm"]["attempts"]] == [64, 128]
