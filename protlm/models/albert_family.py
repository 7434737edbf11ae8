"""The ProtAlbert family: ALBERT masked LM (`protlm.models.model.MaskedLMModel`) and its `Family`
entry.

Network and config: `protlm.models.albert`. Hugging Face conversion: `protlm.hf.albert`.
Objective: `protalbert_mlm` (ProtBert's rule: 15 % selected, 80/10/10 [MASK]/random/unchanged, on
ProtAlbert's ids; MLM only, no sentence-order prediction: one protein per document). Batches are
ProtBert's (`BertFamily.batch_shapes`). Embedding: [CLS] residues [SEP], both specials dropped, as
Rostlab's ProtAlbert notebooks do.
"""
from __future__ import annotations

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

    cls_id, sep_id = tok.PROTALBERT_CLS_ID, tok.PROTALBERT_SEP_ID
    encode_residues = staticmethod(tok.encode_protalbert)
    array_batch_fn = "albert_batch"


FAMILY = AlbertFamily()
