"""The ProtXLNet family: permutation LM with two-stream attention (`PermutationLMModel`).

Network and config: `protlm.models.xlnet` (on `protlm.models.xl_stack`). Hugging Face
conversion: `protlm.hf.xlnet` (`XLNetLMHeadModel`). Objective: XLNet's partial prediction of
`num_predict` tokens per example under a sampled factorisation order (`protlm.data.plm`), rows
continuing from step to step with the memory carried in the train state. Embedding: residues then
`<sep> <cls>` (Rostlab's tokenizer, U Z O B X -> `<unk>`); both specials are dropped. Padding
(`<pad>` = 5, not 0) is masked out of attention, so where it sits (transformers pads on the left)
does not change the residues' vectors.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from protlm.data import tokens as tok
from protlm.models import xlnet
from protlm.models.family import Family, int_shapes
from protlm.models.xl_model import XLModel

SEGMENT_KEYS = ("input_tokens", "seg_ids", "perm_index", "perm_part")
TARGET_KEYS = ("target_positions", "target_tokens", "target_weights")


class PermutationLMModel(XLModel):
    """ProtXLNet: cross entropy of the query stream at `target_positions` (weights
    `target_weights`); without `perm_index` (embedding) every position sees every other."""

    input_key = "input_tokens"
    target_key = "target_tokens"
    weights_key = "target_weights"
    pad_id = tok.PROTXLNET_PAD_ID

    def network_inputs(self, batch, mem_valid):
        cfg = self.config
        tokens = jnp.asarray(batch[self.input_key])
        q = tokens.shape[1]
        mem = 0 if mem_valid is None else cfg.mem_len
        key_valid = xlnet.key_validity(tokens, mem_valid, mem, self.pad_id)
        out = {"tokens": tokens, "seg_ids": batch.get("seg_ids"), "reverse": batch.get("reverse")}
        if "perm_index" not in batch:
            own = jnp.arange(mem + q)[None, :] == mem + jnp.arange(q)[:, None]
            out["mask_h"] = (key_valid[:, None, :] | own[None])[:, None]
            return out
        out["mask_h"], out["mask_g"] = xlnet.permutation_masks(
            tokens, jnp.asarray(batch["perm_index"]), jnp.asarray(batch["perm_part"]), key_valid,
            mem)
        weights = jnp.asarray(batch["target_weights"], jnp.float32)
        out["target_mapping"] = jax.nn.one_hot(jnp.asarray(batch["target_positions"]), q,
                                               dtype=jnp.float32) * weights[..., None]
        return out


class XLNetFamily(Family):
    """ProtXLNet (XLNet)."""

    name = "xlnet"
    config_cls = xlnet.XLNetConfig
    presets = xlnet.PRESETS
    tasks = ("protlm.data.stream_sources.PermutationLMStreamSource",)  # a batch source
    hf_module = "protlm.hf.xlnet"
    pad_id = tok.PROTXLNET_PAD_ID

    def model(self, config):
        return PermutationLMModel(config)

    def batch_shapes(self, config, lengths, batch_size, pack):
        del pack   # streams are never packed
        length = int(lengths["inputs"])
        predict = int(lengths.get("targets", xlnet.default_num_predict(length)))
        shapes = {**int_shapes(SEGMENT_KEYS, batch_size, length),
                  **int_shapes(TARGET_KEYS, batch_size, predict)}
        shapes["reverse"] = int_shapes(("reverse",), batch_size, 1)["reverse"]
        return shapes

    def feature_lengths(self, batch_shapes: Mapping) -> dict[str, int]:
        return {"inputs": int(np.shape(batch_shapes["input_tokens"])[1]),
                "targets": int(np.shape(batch_shapes["target_tokens"])[1])}

    def default_lengths(self, length: int) -> dict[str, int]:
        return {"inputs": int(length), "targets": xlnet.default_num_predict(int(length))}

    def array_batch(self, sequences: Sequence[str], lengths, seed: int = 0):
        """One example per sequence from streams over `sequences` (cycled), with the data
        flags scaled to the length: `reuse_len` half of it, `perm_size` the largest block
        dividing both parts, no `bi_data`."""
        import itertools  # noqa: PLC0415

        from protlm.data import plm  # noqa: PLC0415
        from protlm.data.streams import ProteinStreams  # noqa: PLC0415

        length = int(lengths["inputs"])
        reuse = length // 2
        cfg = plm.PLMConfig(seq_len=length, reuse_len=reuse,
                            perm_size=math.gcd(reuse, length - reuse),
                            num_predict=int(lengths.get("targets", xlnet.default_num_predict(length))),
                            bi_data=False)
        streams = ProteinStreams(itertools.cycle(list(sequences)), len(sequences),
                                 tok.encode_protxlnet, tok.PROTXLNET_EOD_ID)
        return plm.stream_batch(streams, 0, cfg, seed)

    def tokenize(self, sequence: str) -> tuple[np.ndarray, int]:
        ids = np.concatenate([tok.encode_protxlnet(sequence),
                              [tok.PROTXLNET_SEP_ID, tok.PROTXLNET_CLS_ID]])
        return ids.astype(np.int32), 0


FAMILY = XLNetFamily()
