"""ProtTXL: Transformer-XL (Dai et al. 2019), a causal LM with segment-level recurrence.

As kimiyoung/transformer-xl `pytorch/mem_transformer.py` (`MemTransformerLM`, `attn_type=0`):
relative positional attention with the global content/position biases `r_w_bias`, `r_r_bias`
(one pair for all layers, as the PyTorch code; `untie_r=True` gives each layer its own, as the TF
code's flag), sinusoidal relative embeddings, `clamp_len`, `same_length`, post-LN layers, ReLU
feed-forward, input embeddings scaled by `sqrt(d_model)`, the output layer tied to the embedding
plus a bias, LayerNorm eps 1e-5 (torch's default) with scales drawn from N(1, init_std). Each
layer attends over `mem_len` cached states of the previous segments (its inputs, stop-gradient;
`protlm.layers.memory`) and the current segment. No adaptive softmax: with a vocabulary of 28
every cluster would be the head (`div_val=1`, no cutoffs). `ext_len` is 0 (the default).

The network is `protlm.models.xl_stack.XLTransformer` (shared with ProtXLNet); this file holds
the config, the causal mask with memory, and the presets.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from protlm.data import tokens as tok
from protlm.layers import memory as memory_lib
from protlm.models.xl_stack import XLConfig, embedding_scale


@dataclasses.dataclass(frozen=True)
class TXLConfig(XLConfig):
    """Transformer-XL hyperparameters (mem_transformer.py / train.py names in comments).

    Feature lengths `{"inputs": tgt_len}`: every step reads `tgt_len` new tokens per stream and
    predicts each one's successor.
    """

    family_name: ClassVar[str] = "txl"
    causal: ClassVar[bool] = True
    segments: ClassVar[bool] = False
    two_stream: ClassVar[bool] = False

    vocab_size: int = tok.PROTTXL_VOCAB_SIZE
    layer_norm_eps: float = 1e-5         # nn.LayerNorm default
    # ProtTrans does not publish ProtTXL's dropout: one constant each (verify).
    dropout_rate: float = 0.1            # dropout
    attention_dropout_rate: float = 0.0  # dropatt
    mem_len: int = 512                   # PROTTRANS_FACTS section 7: memory 512 (verify)
    same_length: bool = False            # every query sees exactly mem_len keys (evaluation)

    def __post_init__(self):
        super().__post_init__()
        if self.same_length and self.mem_len <= 0:
            raise ValueError("same_length needs mem_len > 0")

    @property
    def embedding_scale(self) -> float:
        return embedding_scale(self.hidden_size)

    @property
    def layer_norm_scale_std(self) -> float:
        return self.initializer_range   # train.py weights_init: LayerNorm weight ~ N(1, init_std)

    def param_counts(self) -> dict[str, int]:
        """protlm's count; the transformers export (`XLNetLMHeadModel`, attn_type "uni") adds
        the zero segment terms and `mask_emb` and stores the scaled input embedding apart from
        the output weight (see `protlm.hf.txl`). A model whose heads x head_dim != hidden_size
        (ProtTXL-BFD: 14 x 128 != 1024) has no transformers class and no such count."""
        v, d, nh = self.vocab_size, self.hidden_size, self.num_heads * self.head_dim
        counts = {"total": self.num_params()}
        if self.heads_span_hidden:
            per_layer_hf = 5 * d * nh + 3 * nh + 2 * nh + 2 * d + 2 * d * self.intermediate_size \
                + self.intermediate_size + d + 2 * d
            counts["XLNetLMHeadModel"] = 2 * v * d + v + d + self.num_layers * per_layer_hf
        return counts


def causal_mask(tokens: jax.Array, mem_valid: jax.Array | None, mem_len: int,
                same_length: bool = False, pad_id: int = tok.PROTTXL_PAD_ID) -> jax.Array:
    """Bool `[b, 1, q, mem_len + q]`: query `i` sees the real memory slots and keys `<= i`.

    With `same_length` every query sees the `mem_len` most recent keys only (Transformer-XL's
    evaluation mask); padding keys (`pad_id`) are hidden.
    """
    b, q = tokens.shape
    m = 0 if mem_valid is None else mem_len
    valid = tokens != pad_id
    if m:
        valid = jnp.concatenate([memory_lib.memory_key_valid(mem_valid, m), valid], axis=1)
    i = jnp.arange(q)[:, None]
    j = jnp.arange(m + q)[None, :]
    allowed = j <= m + i
    if same_length:
        allowed = allowed & (j > i + m - mem_len)
    return (allowed[None] & valid[:, None, :])[:, None]


PRESETS: dict[str, dict] = {
    "prot_txl_tiny": dict(hidden_size=32, num_layers=2, num_heads=4, head_dim=8,
                          intermediate_size=64, mem_len=16, dtype="float32"),
    "prot_txl_small": dict(hidden_size=256, num_layers=6, num_heads=8, head_dim=32,
                           intermediate_size=1024, mem_len=128),
    # ProtTrans Table 1 / PROTTRANS_FACTS section 1: 30 layers, d_model 1024, 16 x 64,
    # d_inner 4096 (verify), ~409 M.
    "prot_txl": dict(hidden_size=1024, num_layers=30, num_heads=16, head_dim=64,
                     intermediate_size=4096),
    # ProtTXL-BFD: 32 layers, d_model 1024, 14 heads x 128 (14 x 128 != 1024: Transformer-XL's
    # projections allow it), d_inner 4096 (verify), ~562 M.
    "prot_txl_bfd": dict(hidden_size=1024, num_layers=32, num_heads=14, head_dim=128,
                         intermediate_size=4096),
}
