"""The streaming safetensors writer (read back by the safetensors library) and the HF reader."""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from protlm.hf import mapping
from protlm.hf.safetensors_writer import (SAFE_WEIGHTS_INDEX_NAME, TensorSpec, parse_size,
                                          plan_shards, write_safetensors)
from protlm.hf.weights_reader import HFWeights


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "a.weight": rng.normal(size=(3, 5)).astype(np.float32),
        "b.weight": rng.normal(size=(7,)).astype(np.float16),
        "c.weight": rng.normal(size=(2, 3, 4)).astype(ml_dtypes.bfloat16),
        "d.bias": rng.normal(size=(1,)).astype(np.float32),
    }


def _specs(tensors):
    return [TensorSpec(k, v.shape, v.dtype) for k, v in tensors.items()]


def test_single_file_reads_back_with_safetensors(tmp_path):
    tensors = _tensors()
    files = write_safetensors(str(tmp_path), _specs(tensors), tensors.__getitem__)
    assert files == ["model.safetensors"]
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(tensors)
        for k, v in tensors.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype
            np.testing.assert_array_equal(got, v)


def test_sharded_output_and_index(tmp_path):
    tensors = _tensors()
    specs = _specs(tensors)
    files = write_safetensors(str(tmp_path), specs, tensors.__getitem__, max_shard_bytes=60)
    shards = plan_shards(specs, 60)
    assert len(shards) > 1 and all(sum(s.nbytes for s in sh) <= 60 or len(sh) == 1 for sh in shards)
    assert files[-1] == SAFE_WEIGHTS_INDEX_NAME
    assert files[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / SAFE_WEIGHTS_INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
    assert set(index["weight_map"]) == set(tensors)
    weights = HFWeights(str(tmp_path))
    assert weights.keys() == sorted(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(weights[k], v)


def test_writer_rejects_wrong_tensor(tmp_path):
    tensors = _tensors()
    specs = _specs(tensors)
    with pytest.raises(ValueError, match="a.weight produced float64"):
        write_safetensors(str(tmp_path), specs, lambda k: tensors[k].astype(np.float64))
    with pytest.raises(ValueError, match="duplicate tensor names"):
        write_safetensors(str(tmp_path), specs + specs[:1], tensors.__getitem__)


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2KiB") == 2048
    assert parse_size(123) == 123


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights found"):
        HFWeights(str(tmp_path))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"x": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="names shard model-00001-of-00002"):
        HFWeights(str(tmp_path))


def test_reader_prefers_safetensors_and_reads_bin(tmp_path):
    import torch
    tensors = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    torch.save({"x": torch.ones(2, 3, dtype=torch.bfloat16)}, tmp_path / "pytorch_model.bin")
    weights = HFWeights(str(tmp_path))
    assert weights["x"].dtype == ml_dtypes.bfloat16 and np.all(weights["x"] == 1)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    np.testing.assert_array_equal(HFWeights(str(tmp_path))["x"], tensors["x"])


@pytest.mark.parametrize("layout,shape", [("copy", (4, 6)), ("transpose", (4, 6)),
                                          ("heads_in", (6, 2, 3)), ("heads_out", (2, 3, 6)),
                                          ("flatten", (2, 3))])
def test_rule_layouts_invert_exactly(layout, shape):
    rule = mapping.Rule("k", ("a", "b"), layout)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    y = rule.to_hf(x)
    assert y.shape == rule.hf_shape(shape)
    np.testing.assert_array_equal(rule.from_hf(y, shape), x)


def test_rule_shape_mismatch_names_both_sides():
    rule = mapping.Rule("encoder.block.0.layer.0.SelfAttention.q.weight",
                        ("encoder", "layers_0", "attention", "query", "kernel"), "heads_in")
    with pytest.raises(ValueError, match=r"SelfAttention.q.weight: shape \(8, 4\) does not match"
                                         r" \(6, 4\) expected for encoder/layers_0"):
        rule.from_hf(np.zeros((8, 4), np.float32), (4, 2, 3))
