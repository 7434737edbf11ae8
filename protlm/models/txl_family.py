"""The ProtTXL family: causal LM with segment recurrence (`CausalLMModel`) and its `Family` entry.

Network and config: `protlm.models.txl` (on `protlm.models.xl_stack`). Hugging Face conversion:
`protlm.hf.txl` (exported as transformers 5 `XLNetLMHeadModel` with `attn_type="uni"`).
Objective: next-token cross entropy over parallel protein streams (`protlm.data.streams`): batch
row `i` of step `t+1` continues row `i` of step `t`, and the memory is carried in the train state.
Embedding: `<eos> residues`; the leading separator (the context every protein of the stream
starts from) is dropped. A causal model's residue vector sees that residue and the ones before it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from protlm.data import tokens as tok
from protlm.models import txl
from protlm.models.family import Family, int_shapes
from protlm.models.xl_model import XLModel

KEYS = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights")


class CausalLMModel(XLModel):
    """ProtTXL: every input token predicts its successor (`decoder_target_tokens`)."""

    input_key = "decoder_input_tokens"
    target_key = "decoder_target_tokens"
    weights_key = "decoder_loss_weights"
    pad_id = tok.PROTTXL_PAD_ID

    def network_inputs(self, batch, mem_valid):
        tokens = batch[self.input_key]
        return {"tokens": tokens,
                "mask_h": txl.causal_mask(tokens, mem_valid, self.config.mem_len,
                                          self.config.same_length, self.pad_id)}


class TXLFamily(Family):
    """ProtTXL (Transformer-XL)."""

    name = "txl"
    config_cls = txl.TXLConfig
    presets = txl.PRESETS
    tasks = ("protlm.data.stream_sources.CausalLMStreamSource",)   # a batch source, not seqio
    hf_module = "protlm.hf.txl"
    pad_id = tok.PROTTXL_PAD_ID

    def model(self, config):
        return CausalLMModel(config)

    def batch_shapes(self, config, lengths, batch_size, pack):
        del pack   # streams are never packed: the memory spans protein boundaries
        return int_shapes(KEYS, batch_size, int(lengths["inputs"]))

    def feature_lengths(self, batch_shapes: Mapping) -> dict[str, int]:
        return {"inputs": int(np.shape(batch_shapes["decoder_input_tokens"])[1])}

    def array_batch(self, sequences: Sequence[str], lengths, seed: int = 0):
        from protlm.data import causal_lm  # noqa: PLC0415

        return causal_lm.single_protein_rows(sequences, int(lengths["inputs"]), seed)

    def tokenize(self, sequence: str) -> tuple[np.ndarray, int]:
        ids = np.concatenate([[tok.PROTTXL_EOS_ID], tok.encode_prottxl(sequence)])
        return ids.astype(np.int32), 1


FAMILY = TXLFamily()
