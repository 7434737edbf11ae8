"""ProtBert <-> transformers `BertForMaskedLM` parameter names.

HF layout (PyTorch state dict, torch Linear = `[out, in]`):

    bert.embeddings.{word,position,token_type}_embeddings.weight, bert.embeddings.LayerNorm.{weight,bias}
    bert.encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}
    bert.encoder.layer.{i}.attention.output.{dense,LayerNorm}.{weight,bias}
    bert.encoder.layer.{i}.intermediate.dense.{weight,bias}
    bert.encoder.layer.{i}.output.{dense,LayerNorm}.{weight,bias}
    cls.predictions.transform.{dense,LayerNorm}.{weight,bias}, cls.predictions.bias

`cls.predictions.decoder.{weight,bias}` are tied copies of the word embeddings and
`cls.predictions.bias`; transformers 5 does not write them, older checkpoints may.
"""
from __future__ import annotations

from protlm.hf.mapping import Rule
from protlm.models.bert import BertConfig

# Parts of a BERT checkpoint that BertForMaskedLM (and protlm) has no place for: the position-id
# buffer old transformers versions saved, and the pooler / next-sentence head of
# BertForPreTraining checkpoints. Import drops them with a warning, as transformers does.
DROPPED_KEYS = (
    "bert.embeddings.position_ids",
    "bert.pooler.dense.weight", "bert.pooler.dense.bias",
    "cls.seq_relationship.weight", "cls.seq_relationship.bias",
)


def _linear(hf: str, flax: tuple[str, ...], kernel_layout: str, bias_layout: str = "copy"
            ) -> list[Rule]:
    return [Rule(f"{hf}.weight", flax + ("kernel",), kernel_layout),
            Rule(f"{hf}.bias", flax + ("bias",), bias_layout)]


def _layer_norm(hf: str, flax: tuple[str, ...]) -> list[Rule]:
    return [Rule(f"{hf}.weight", flax + ("scale",)), Rule(f"{hf}.bias", flax + ("bias",))]


def rules(config: BertConfig, encoder_only: bool = False) -> list[Rule]:
    """All rules, in the order tensors are written (`encoder_only` is not supported for BERT)."""
    if encoder_only:
        raise ValueError("encoder_only applies to ProtT5; ProtBert exports as BertForMaskedLM")
    emb = ("embeddings",)
    out = [Rule(f"bert.embeddings.{name}.weight", emb + (name, "embedding"))
           for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    out += _layer_norm("bert.embeddings.LayerNorm", emb + ("layer_norm",))
    for i in range(config.num_layers):
        hf, fl = f"bert.encoder.layer.{i}", ("encoder", f"layers_{i}")
        for name in ("query", "key", "value"):
            out += _linear(f"{hf}.attention.self.{name}", fl + ("attention", name), "heads_in",
                           "flatten")
        out += _linear(f"{hf}.attention.output.dense", fl + ("attention", "out"), "heads_out")
        out += _layer_norm(f"{hf}.attention.output.LayerNorm", fl + ("attention_layer_norm",))
        out += _linear(f"{hf}.intermediate.dense", fl + ("mlp", "wi"), "transpose")
        out += _linear(f"{hf}.output.dense", fl + ("mlp", "wo"), "transpose")
        out += _layer_norm(f"{hf}.output.LayerNorm", fl + ("mlp_layer_norm",))
    out += _linear("cls.predictions.transform.dense", ("mlm_head", "transform"), "transpose")
    out += _layer_norm("cls.predictions.transform.LayerNorm", ("mlm_head", "layer_norm"))
    out.append(Rule("cls.predictions.bias", ("mlm_head", "bias")))
    return out


def tied_aliases(config: BertConfig, encoder_only: bool = False) -> dict[str, str]:
    """`{alias key: canonical key}` for tied copies a checkpoint may also store."""
    del config, encoder_only
    return {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias"}
