"""HF -> protlm -> HF: transformers-made checkpoints in every layout import exactly and re-export
to identical tensors; bad directories fail with errors that name the keys."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from protlm import models
from protlm.hf import export, importer
from protlm.hf.weights_reader import HFWeights

from .conftest import eval_batch

import torch
import transformers

pytestmark = pytest.mark.hf

T5_TINY = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
               num_heads=4, feed_forward_proj="relu", dropout_rate=0.0)
BERT_TINY = dict(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)


def _hf_model(kind: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if kind == "bert":
        return transformers.BertForMaskedLM(transformers.BertConfig(**{**BERT_TINY, **overrides}))
    cls = transformers.T5EncoderModel if kind == "t5_enc" else transformers.T5ForConditionalGeneration
    model = cls(transformers.T5Config(**{**T5_TINY, **overrides}))
    with torch.no_grad():  # non-trivial norm scales, so a swapped norm mapping cannot pass
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _write_bin(model, out_dir, with_aliases: bool = True):
    """Rostlab layout: config.json + pytorch_model.bin with the tied copies stored too."""
    out_dir.mkdir()
    model.config.to_json_file(str(out_dir / "config.json"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if not with_aliases:
        state = {k: v for k, v in state.items() if k not in (model._tied_weights_keys or {})}
    torch.save(state, out_dir / "pytorch_model.bin")


def _assert_same_tensors(src, dst, keys=None):
    a, b = HFWeights(str(src)), HFWeights(str(dst))
    keys = keys if keys is not None else a.keys()
    assert sorted(keys) == b.keys()
    for k in keys:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("kind,dtype,shard", [
    ("t5", "float32", None), ("t5", "float16", "20KB"), ("t5", "bfloat16", None),
    ("t5_enc", "float16", None), ("bert", "float32", None), ("bert", "float16", "20KB")])
def test_save_pretrained_roundtrip_identical(kind, dtype, shard, tmp_path):
    model = _hf_model(kind).to(getattr(torch, dtype))
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(tmp_path / "src", **kwargs)
    if shard:
        assert (tmp_path / "src" / "model.safetensors.index.json").is_file()
    params, config = importer.params_from_hf(tmp_path / "src")
    assert all(leaf.dtype == np.float32 for leaf in _leaves(params))
    assert ("decoder" in params) == (kind == "t5")
    out = export.export_params(params, config, tmp_path / "dst", dtype=dtype, progress=False,
                               max_shard_bytes=20_000 if shard else 1 << 40)
    _assert_same_tensors(tmp_path / "src", out)
    assert (out / "model.safetensors.index.json").is_file() == bool(shard)
    arch = json.loads((out / "config.json").read_text())["architectures"]
    assert arch == [type(model).__name__]


def _leaves(tree):
    for v in tree.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


@pytest.mark.parametrize("kind", ["t5", "bert"])
def test_rostlab_bin_with_tied_copies(kind, tmp_path):
    model = _hf_model(kind, seed=1)
    _write_bin(model, tmp_path / "src")
    params, config = importer.params_from_hf(tmp_path / "src")
    out = export.export_params(params, config, tmp_path / "dst", progress=False)
    tied = set(model._tied_weights_keys)
    keys = [k for k in HFWeights(str(tmp_path / "src")).keys() if k not in tied]
    _assert_same_tensors(tmp_path / "src", out, keys)


@pytest.mark.parametrize("overrides", [{}, {"feed_forward_proj": "gated-gelu"}],
                         ids=["relu", "gated-gelu"])
def test_imported_t5_computes_what_transformers_computes(overrides, tmp_path, proteins):
    model = _hf_model("t5", seed=2, **overrides).eval()
    model.save_pretrained(tmp_path / "src")
    params, config = importer.params_from_hf(tmp_path / "src", dtype="float32")
    batch = eval_batch(config, proteins[:6])
    enc = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=enc, attention_mask=(enc > 0).long(),
                    decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long))
    ours = models.get_model(config)
    mask = batch["encoder_input_tokens"] > 0
    hidden = np.asarray(ours.encode(params, batch["encoder_input_tokens"]))
    logits = np.asarray(ours.logits(params, batch))
    assert np.abs(hidden - out.encoder_last_hidden_state.numpy())[mask].max() <= 1e-4
    assert np.abs(logits - out.logits.numpy())[mask].max() <= 1e-4


def test_encoder_only_import_embeds_like_t5_encoder_model(tmp_path, proteins):
    model = _hf_model("t5_enc", seed=3).eval()
    model.half().save_pretrained(tmp_path / "src")  # like prot_t5_xl_half_uniref50-enc
    params, config = importer.params_from_hf(tmp_path / "src", dtype="float32")
    assert sorted(params) == ["encoder", "token_embedder"]
    batch = eval_batch(config, proteins[:6])
    enc = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        ref = model.float()(input_ids=enc, attention_mask=(enc > 0).long()).last_hidden_state
    hidden = np.asarray(models.get_model(config).encode(params, batch["encoder_input_tokens"]))
    assert np.abs(hidden - ref.numpy())[batch["encoder_input_tokens"] > 0].max() <= 1e-4


def test_unknown_and_missing_keys_are_listed(tmp_path):
    model = _hf_model("t5", seed=4)
    model.save_pretrained(tmp_path / "src")
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(tmp_path / "src" / "model.safetensors"))
    del tensors["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
    tensors["decoder.block.1.layer.2.DenseReluDense.wi_1.weight"] = np.zeros((64, 32), np.float32)
    save_file(tensors, str(tmp_path / "src" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        importer.params_from_hf(tmp_path / "src")
    msg = str(err.value)
    assert "unknown keys (1): ['decoder.block.1.layer.2.DenseReluDense.wi_1.weight']" in msg
    assert "missing keys (1): ['decoder.block.1.layer.2.DenseReluDense.wo.weight']" in msg


def test_shape_mismatch_and_untied_copies_fail(tmp_path):
    model = _hf_model("t5", seed=5)
    _write_bin(model, tmp_path / "src")
    state = torch.load(tmp_path / "src" / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "lm_head.weight": state["lm_head.weight"] + 1},
               tmp_path / "src" / "pytorch_model.bin")
    with pytest.raises(ValueError, match="lm_head.weight differs from shared.weight"):
        importer.params_from_hf(tmp_path / "src")
    torch.save(state, tmp_path / "src" / "pytorch_model.bin")
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, "d_ff": 48}))
    with pytest.raises(ValueError, match=r"DenseReluDense.wi.weight: shape \(64, 32\) does not "
                                         r"match \(48, 32\)"):
        importer.params_from_hf(tmp_path / "src")


def test_bert_pretraining_heads_are_dropped_with_warning(tmp_path, caplog):
    torch.manual_seed(6)
    pre = transformers.BertForPreTraining(transformers.BertConfig(**BERT_TINY))
    _write_bin(pre, tmp_path / "src", with_aliases=False)
    with caplog.at_level(logging.WARNING, logger="protlm.hf.importer"):
        params, _ = importer.params_from_hf(tmp_path / "src")
    assert "cls.seq_relationship.weight" in caplog.text and "bert.pooler.dense.weight" in caplog.text
    np.testing.assert_array_equal(params["mlm_head"]["bias"],
                                  pre.cls.predictions.bias.detach().numpy())


def test_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        importer.params_from_hf(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        importer.params_from_hf(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "t5",\n "d_model": }')
    with pytest.raises(ValueError, match="invalid JSON at line 2"):
        importer.params_from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", **T5_TINY}))
    with pytest.raises(FileNotFoundError, match="no weights found"):
        importer.params_from_hf(tmp_path)
