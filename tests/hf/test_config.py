"""Exported config.json dicts carry every Rostlab field with Rostlab's values, and read back."""
from __future__ import annotations

import json

import pytest

from protlm import models
from protlm.hf import bert as hf_bert
from protlm.hf import t5 as hf_t5

# Fields whose value is the writer's, not the model's.
VOLATILE = {"transformers_version"}


def _reference(data_root, rel):
    return json.loads((data_root / rel).read_text())


def test_prot_t5_xl_config_has_every_rostlab_field(data_root):
    ref = _reference(data_root, "model_configs/prot_t5_xl_uniref50_config_as_logged.json")
    ours = hf_t5.to_hf_config(models.get_config("prot_t5_xl"))
    missing = sorted(set(ref) - set(ours))
    assert missing == []
    assert {k: ours[k] for k in ref if k not in VOLATILE} == {k: v for k, v in ref.items()
                                                               if k not in VOLATILE}
    assert hf_t5.from_hf_config(ref) == models.get_config("prot_t5_xl", dtype="bfloat16")


def test_prot_bert_config_has_every_rostlab_field(data_root):
    ref = _reference(data_root, "hf_reference/prot_bert/config.transcribed.json")
    ours = hf_bert.to_hf_config(models.get_config("prot_bert"))
    assert sorted(set(ref) - set(ours)) == []
    assert {k: ours[k] for k in ref} == ref
    assert hf_bert.from_hf_config(ref) == models.get_config("prot_bert")


@pytest.mark.parametrize("name", ["prot_t5_tiny", "prot_t5_small", "prot_t5_xxl"])
def test_t5_config_roundtrip(name):
    config = models.get_config(name)
    assert hf_t5.from_hf_config(hf_t5.to_hf_config(config), dtype=config.dtype) == config
    enc = hf_t5.to_hf_config(config, "encoder", dtype="float16")
    assert enc["architectures"] == ["T5EncoderModel"] and enc["torch_dtype"] == "float16"
    assert hf_t5.part_of_hf(enc, {"decoder.block.0.layer.0.layer_norm.weight"}) == "encoder"
    assert hf_t5.part_of_hf(hf_t5.to_hf_config(config), {"decoder.final_layer_norm.weight"}) == "model"


@pytest.mark.parametrize("activations,proj", [(("relu",), "relu"), (("gelu",), "gelu"),
                                              (("gelu_new", "linear"), "gated-gelu"),
                                              (("silu", "linear"), "gated-silu")])
def test_feed_forward_proj(activations, proj):
    assert hf_t5.feed_forward_proj(activations) == proj
    assert hf_t5.mlp_activations(proj) == activations


def test_unrepresentable_and_incomplete_configs_fail():
    with pytest.raises(ValueError, match="HF's 'gated-gelu' is the tanh approximation"):
        hf_t5.feed_forward_proj(("gelu", "linear"))
    with pytest.raises(ValueError, match=r"T5: config.json lacks \['d_kv'\]"):
        hf_t5.from_hf_config({"d_model": 8, "d_ff": 16, "num_heads": 2, "num_layers": 1,
                              "vocab_size": 128})
    with pytest.raises(ValueError, match="position_embedding_type 'relative_key'"):
        hf_bert.from_hf_config({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                "intermediate_size": 16, "vocab_size": 30,
                                "position_embedding_type": "relative_key"})


@pytest.mark.hf
def test_transformers_reads_the_exported_configs():
    import transformers
    t5 = transformers.T5Config(**hf_t5.to_hf_config(models.get_config("prot_t5_xl")))
    assert (t5.d_model, t5.d_ff, t5.num_heads, t5.d_kv, t5.num_layers, t5.num_decoder_layers,
            t5.dense_act_fn, t5.is_gated_act, t5.scale_decoder_outputs) == (
                1024, 16384, 32, 128, 24, 24, "relu", False, True)
    bert = transformers.BertConfig(**hf_bert.to_hf_config(models.get_config("prot_bert")))
    assert (bert.hidden_act, bert.layer_norm_eps, bert.max_position_embeddings) == ("gelu", 1e-12,
                                                                                    40000)
