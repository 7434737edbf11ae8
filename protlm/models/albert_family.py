"""The ProtAlbert family: ALBERT masked LM (`protlm.models.model.MaskedLMModel`) and its `Family`
entry.

Network and config: `protlm.models.albert`. Hugging Face conversion: `protlm.hf.albert`.
Objective: `protalbert_mlm` (ProtBert's rule: 15 % selected, 80/10/10 [MASK]/random/unchanged, on
ProtAlbert's ids; MLM only, no sentence-order prediction: one protein per document). Batches are
ProtBert's (`BertFamily.batch_shapes`). Embedding: [CLS] residues [SEP], both specials dropped, as
Rostlab's ProtAlbert notebooks do.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from protlm.data import tokens as tok
from protlm.models import albert
from protlm.models.bert_family import BertFamily
from protlm.models.model import MaskedLMModel


class AlbertFamily(BertFamily):
    """ProtAlbert (factorised embeddings, one shared layer, MLM head; HF `AlbertForMaskedLM`)."""

    name = "albert"
    config_cls = albert.AlbertConfig
    presets = albert.PRESETS
    tasks = ("protalbert_mlm",)
    hf_module = "protlm.hf.albert"

    def model(self, config):
        return MaskedLMModel(config, albert.AlbertForMaskedLM(config), tok.PROTALBERT_MASK_ID)

    def array_batch(self, sequences: Sequence[str], lengths, seed: int = 0):
        from protlm.data import arrays  # noqa: PLC0415

        return arrays.albert_batch(sequences, int(lengths["inputs"]), seed)

    def tokenize(self, sequence: str) -> tuple[np.ndarray, int]:
        ids = np.concatenate([[tok.PROTALBERT_CLS_ID], tok.encode_protalbert(sequence),
                              [tok.PROTALBERT_SEP_ID]])
        return ids.astype(np.int32), 1


FAMILY = AlbertFamily()
