"""ProtXLNet: XLNet (Yang et al. 2019), permutation language modelling with two-stream attention.

As zihangdai/xlnet `modeling.py` (`transformer_xl` with `attn_type="bi"`, `two_stream_rel_attn`)
and transformers' `XLNetLMHeadModel`: relative positional attention with memory, relative
segment encoding (`r_s_bias`, per-layer `seg_embed`; memory counts as segment 0), per-layer biases
(`untie_r`, XLNet-Large's setting), unscaled input embeddings, post-LN layers, the content
stream `h` and the query stream `g` (initialised from `mask_emb`, one row per predicted token)
sharing every weight, the LM head tied to the embedding plus a bias (`lm_loss`). The memory
caches the first `reuse_len` positions of every layer's content-stream input (`_cache_mem`).

`permutation_masks` turns the data's factorisation order (`perm_index`, `perm_part`;
`protlm.data.plm`) into
XLNet's two masks: the query stream of a target never sees its own content, the content stream
always sees itself (`non_tgt_mask`).

The network is `protlm.models.xl_stack.XLTransformer` (shared with ProtTXL).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from protlm.data import tokens as tok
from protlm.layers import memory as memory_lib
from protlm.models.xl_stack import XLConfig

# XLNet-Large's ratio of predicted tokens: num_predict 85 of seq_len 512.
NUM_PREDICT_PER_512 = 85


@dataclasses.dataclass(frozen=True)
class XLNetConfig(XLConfig):
    """XLNet hyperparameters (transformers `XLNetConfig` / xlnet flags in comments).

    Feature lengths `{"inputs": seq_len, "targets": num_predict}`.
    """

    family_name: ClassVar[str] = "xlnet"
    causal: ClassVar[bool] = False
    segments: ClassVar[bool] = True
    two_stream: ClassVar[bool] = True

    vocab_size: int = tok.PROTXLNET_VOCAB_SIZE
    # transformers' "gelu" (exact erf) as in Rostlab's config.json; the TF original computed the
    # tanh approximation ("gelu_new").
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    mem_len: int = 384                   # XLNet-Large pretraining (verify)
    untie_r: bool = True
    reuse_len: int = 256                 # positions cached as memory (the first half)

    def __post_init__(self):
        super().__post_init__()
        if self.hidden_size != self.num_heads * self.head_dim:
            raise ValueError(f"XLNet needs hidden_size == num_heads * head_dim, got "
                             f"{self.hidden_size} != {self.num_heads} x {self.head_dim}")
        if self.reuse_len < 0:
            raise ValueError(f"reuse_len must be >= 0, got {self.reuse_len}")

    def predicted_per_example(self, lengths) -> int:
        return int(lengths.get("targets", default_num_predict(int(lengths["inputs"]))))

    def param_counts(self) -> dict[str, int]:
        counts = {"total": self.num_params()}
        if self.untie_r:   # transformers keeps per-layer biases: same parameters
            counts["XLNetLMHeadModel"] = self.num_params()
        return counts


def default_num_predict(seq_len: int) -> int:
    """`num_predict` for a sequence length at XLNet-Large's ratio (85 for 512)."""
    return max(1, round(seq_len * NUM_PREDICT_PER_512 / 512))


def permutation_masks(tokens: jax.Array, perm_index: jax.Array, perm_part: jax.Array,
                      key_valid: jax.Array, mem_len: int) -> tuple[jax.Array, jax.Array]:
    """XLNet's content and query stream masks (True = may attend), `[b, 1, q, mem_len + q]`.

    Within a part (`perm_part`: 0 on the reused positions, 1 after) query `i` may not see a
    predicted or functional key `j` (`perm_index[j] >= 0`) unless `j` comes earlier in the
    factorisation order, and a predicted query not even itself (`_local_perm`); part 0 never sees
    part 1, part 1 sees all of part 0; every query sees the memory. The content stream
    additionally sees its own position (`non_tgt_mask`).

    Args:
      tokens, perm_index, perm_part: `[b, q]` ids, order ranks (-1 = visible context), parts.
      key_valid: bool `[b, mem_len + q]` (real memory slots and non-padding tokens).
    """
    b, q = tokens.shape
    func = (tokens == tok.PROTXLNET_SEP_ID) | (tokens == tok.PROTXLNET_CLS_ID)
    ordered = perm_index >= 0                                   # masked or functional
    target = ordered & ~func
    self_rank = jnp.where(target, perm_index, perm_index + 1)
    hidden = (self_rank[:, :, None] <= perm_index[:, None, :]) & ordered[:, None, :]
    qp, kp = perm_part[:, :, None], perm_part[:, None, :]
    see = jnp.where(qp == kp, ~hidden, qp > kp)                 # [b, q, q]
    see = jnp.concatenate([jnp.ones((b, q, mem_len), bool), see], axis=-1) & key_valid[:, None]
    own = (jnp.arange(mem_len + q)[None, :] == mem_len + jnp.arange(q)[:, None])[None]
    return (see | own)[:, None], see[:, None]


def key_validity(tokens: jax.Array, mem_valid: jax.Array | None, mem_len: int,
                 pad_id: int) -> jax.Array:
    """Bool `[b, mem + q]`: real memory slots, then the non-padding tokens."""
    valid = tokens != pad_id
    if mem_valid is None:
        return valid
    return jnp.concatenate([memory_lib.memory_key_valid(mem_valid, mem_len), valid], axis=1)


PRESETS: dict[str, dict] = {
    "prot_xlnet_tiny": dict(hidden_size=32, num_layers=2, num_heads=4, head_dim=8,
                            intermediate_size=64, mem_len=8, reuse_len=8, dtype="float32"),
    "prot_xlnet_small": dict(hidden_size=256, num_layers=6, num_heads=8, head_dim=32,
                             intermediate_size=1024, mem_len=96, reuse_len=64),
    # Rostlab/prot_xlnet: 30 layers, d_model 1024, 16 x 64, d_inner 4096 (verify), vocab 37
    # (verify), ~409 M; XLNet-Large's mem_len / reuse_len.
    "prot_xlnet": dict(hidden_size=1024, num_layers=30, num_heads=16, head_dim=64,
                       intermediate_size=4096, mem_len=384, reuse_len=256),
}
