"""ProtElectra <-> transformers `ElectraForPreTraining` (discriminator) / `ElectraForMaskedLM`
(generator) parameter names.

protlm trains one joint model; each HF directory holds one network with its own copy of the shared
embeddings (Rostlab's `prot_electra_discriminator_bfd` / `prot_electra_generator_bfd`). The parts:

    discriminator  ElectraForPreTraining: electra.* + discriminator_predictions.{dense,dense_prediction}
    generator      ElectraForMaskedLM:    electra.* + generator_predictions.{dense,LayerNorm},
                   generator_lm_head.bias (its weight is tied to the word embeddings)

`electra.embeddings.*`, `electra.encoder.layer.{i}.*` and the generator head have BERT's layout,
so their rules are `protlm.hf.bert`'s renamed (`bert.` -> `electra.`, `cls.predictions.transform`
-> `generator_predictions`); `electra.embeddings_project` exists when embedding_size != hidden.
An imported directory becomes params of that part alone plus a config whose other network copies
its sizes and whose `encoder_part` is the part held (embed runs it; export writes it back).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from protlm.hf import bert
from protlm.hf.mapping import Rule
from protlm.hf.spec import HFSpec
from protlm.models.electra import PARTS, ElectraConfig

CLASSES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
# BERT key prefix -> ELECTRA key prefix, BERT param path head -> ELECTRA's ("{part}" filled in).
_RENAMES = (
    ("bert.embeddings.", "electra.embeddings.", "embeddings", "embeddings"),
    ("bert.encoder.layer.", "electra.encoder.layer.", "encoder", "{part}_encoder"),
    ("cls.predictions.transform.dense.", "generator_predictions.dense.", "mlm_head",
     "generator_head"),
    ("cls.predictions.transform.LayerNorm.", "generator_predictions.LayerNorm.", "mlm_head",
     "generator_head"),
    ("cls.predictions.bias", "generator_lm_head.bias", "mlm_head", "generator_head"),
)
# The position-id buffer older transformers versions saved; import drops it with a warning.
DROPPED_KEYS = ("electra.embeddings.position_ids",)


def _renamed(rule: Rule, part: str) -> Rule | None:
    for old, new, old_head, new_head in _RENAMES:
        if rule.hf_key.startswith(old) and (part == "generator" or not old.startswith("cls.")):
            assert rule.path[0] == old_head, rule
            return Rule(new + rule.hf_key[len(old):], (new_head.format(part=part),) + rule.path[1:],
                        rule.layout)
    return None


def rules(config: ElectraConfig, part: str = "discriminator") -> list[Rule]:
    """All rules of one part, in the order tensors are written."""
    tower = config.tower_config(part)
    renamed = [r for r in (_renamed(r, part) for r in bert.rules(tower)) if r is not None]
    out = [r for r in renamed if r.path[0] == "embeddings"]
    if config.embedding_size != tower.hidden_size:
        out += [Rule("electra.embeddings_project.weight", (f"{part}_projection", "kernel"),
                     "transpose"),
                Rule("electra.embeddings_project.bias", (f"{part}_projection", "bias"))]
    out += [r for r in renamed if r.path[0] != "embeddings"]
    if part == "discriminator":
        for hf, flax in (("dense", "dense"), ("dense_prediction", "prediction")):
            out += [Rule(f"discriminator_predictions.{hf}.weight",
                         ("discriminator_head", flax, "kernel"), "transpose"),
                    Rule(f"discriminator_predictions.{hf}.bias", ("discriminator_head", flax, "bias"))]
    return out


def tied_aliases(config: ElectraConfig, part: str = "discriminator") -> dict[str, str]:
    """The generator's decoder weight is the word embeddings (transformers 5 does not write it)."""
    del config
    if part == "generator":
        return {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}
    return {}


# ------------------------------------------------------------------------------------ config.json
def to_hf_config(config: ElectraConfig, part: str = "discriminator", dtype: str = "float32") -> dict:
    """config.json of one part: its encoder's BERT fields (Rostlab's prot_electra_*_bfd fields),
    the shared embedding width, `model_type` and the dtype."""
    d = bert.to_hf_config(config.tower_config(part), dtype=dtype)
    d.update(architectures=[CLASSES[part]], model_type="electra",
             embedding_size=config.embedding_size)
    return dict(sorted(d.items()))


def part_of_config(d: Mapping) -> str:
    """"generator" for an `ElectraForMaskedLM` config.json, else "discriminator"."""
    return "generator" if CLASSES["generator"] in (d.get("architectures") or []) else "discriminator"


def from_hf_config(d: Mapping, **overrides) -> ElectraConfig:
    """ElectraConfig of one part's config.json: its encoder read as BERT's (the same fields, checks
    and transformers defaults) for both networks, `embedding_size` (default 128, as transformers),
    and `encoder_part` = the part the file describes."""
    encoder = bert.from_hf_config(d)
    names = {f.name for f in dataclasses.fields(ElectraConfig)}
    fields = {k: v for k, v in dataclasses.asdict(encoder).items() if k in names}
    for part in PARTS:
        fields.update({f"{part}_{n}": getattr(encoder, n) for n in
                       ("hidden_size", "num_layers", "num_heads", "intermediate_size")})
    fields.update(embedding_size=int(d.get("embedding_size", 128)), encoder_part=part_of_config(d))
    fields.update(overrides)
    return ElectraConfig(**fields)


def part_of_hf(d: Mapping, keys: set) -> str:
    """The part a directory holds: by its head's weights, else by its architecture."""
    if any(k.startswith("generator_") for k in keys):
        return "generator"
    if any(k.startswith("discriminator_predictions.") for k in keys):
        return "discriminator"
    return part_of_config(d)


def part_of_params(params: Mapping) -> str:
    """The discriminator when the params hold it (the joint model too), else the generator."""
    return "discriminator" if "discriminator_encoder" in params else "generator"


def select_params(params: Mapping, part: str) -> Mapping:
    """The shared embeddings and `part`'s own params."""
    return {k: v for k, v in params.items() if k == "embeddings" or k.startswith(f"{part}_")}


def recognizes(d: Mapping) -> bool:
    """A config.json without `model_type` whose architecture is an ELECTRA class."""
    return any(a.startswith("Electra") for a in d.get("architectures") or [])


# ------------------------------------------------------------------------------------ tokenizer
def write_tokenizer(out_dir: str, config: ElectraConfig) -> list[str]:
    """ProtBert's BERT-style `vocab.txt` + tokenizer configs (`BertTokenizer`, which
    `AutoTokenizer` loads; ElectraTokenizer is the same WordPiece tokenizer)."""
    return bert.write_tokenizer(out_dir, config)


def torch_inputs(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`ElectraForPreTraining` forward kwargs of an MLM batch: its input, labels = token differs
    from the target. transformers has no joint generator + discriminator model, so this is the
    discriminator's loss on the batch's own corruption (a train benchmark times that part)."""
    enc = np.asarray(batch["encoder_input_tokens"]).astype(np.int64)
    target = np.asarray(batch["encoder_target_tokens"])
    return {"input_ids": enc, "attention_mask": (enc != 0).astype(np.int64),
            "labels": ((enc != target) & (target > 0)).astype(np.int64)}


SPEC = HFSpec(
    model_types=("electra",), classes=CLASSES, embed_class="ElectraModel",
    embed_part="discriminator", rules=rules, to_hf_config=to_hf_config,
    from_hf_config=from_hf_config, write_tokenizer=write_tokenizer, torch_inputs=torch_inputs,
    tied_aliases=tied_aliases, dropped_keys=DROPPED_KEYS, part_of_hf=part_of_hf,
    part_of_params=part_of_params, select_params=select_params, recognizes=recognizes)
