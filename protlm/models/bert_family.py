"""The ProtBert family: BERT masked LM (`protlm.models.model.MaskedLMModel`) and its `Family` entry.

Network and config: `protlm.models.bert`. Hugging Face conversion: `protlm.hf.bert`.
Objective: `protbert_mlm` (15 % selected, 80/10/10 [MASK]/random/unchanged, no next-sentence
prediction). Embedding: [CLS] residues [SEP]; both specials are dropped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from protlm.data import tokens as tok
from protlm.models import bert
from protlm.models.family import Family, int_shapes
from protlm.models.model import MaskedLMModel

MLM_KEYS = ("encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights")
PACKING_KEYS = ("encoder_segment_ids", "encoder_positions")


def mlm_batch_shapes(lengths, batch_size: int, pack: bool) -> dict:
    """Batch shapes of an encoder-only MLM objective (shared by the MLM families)."""
    length = int(lengths.get("inputs", lengths.get("targets")))
    out = int_shapes(MLM_KEYS, batch_size, length)
    if pack:
        out.update(int_shapes(PACKING_KEYS, batch_size, length))
    return out


class BertFamily(Family):
    """ProtBert (BERT encoder + MLM head, HF `BertForMaskedLM`)."""

    name = "bert"
    config_cls = bert.BertConfig
    presets = bert.PRESETS
    tasks = ("protbert_mlm",)
    hf_module = "protlm.hf.bert"

    def model(self, config):
        return MaskedLMModel(config, bert.BertForMaskedLM(config), tok.PROTBERT_MASK_ID)

    def batch_shapes(self, config, lengths, batch_size, pack):
        return mlm_batch_shapes(lengths, batch_size, pack)

    def feature_lengths(self, batch_shapes: Mapping) -> dict[str, int]:
        return {"inputs": int(np.shape(batch_shapes["encoder_input_tokens"])[1])}

    # The vocabulary: [CLS] residues [SEP] rows and the MLM batch builder of `protlm.data.arrays`.
    cls_id, sep_id = tok.PROTBERT_CLS_ID, tok.PROTBERT_SEP_ID
    encode_residues = staticmethod(tok.encode_protbert)
    array_batch_fn = "bert_batch"

    def array_batch(self, sequences: Sequence[str], lengths, seed: int = 0):
        from protlm.data import arrays  # noqa: PLC0415

        return getattr(arrays, self.array_batch_fn)(sequences, int(lengths["inputs"]), seed)

    def tokenize(self, sequence: str) -> tuple[np.ndarray, int]:
        ids = np.concatenate([[self.cls_id], self.encode_residues(sequence), [self.sep_id]])
        return ids.astype(np.int32), 1


FAMILY = BertFamily()
