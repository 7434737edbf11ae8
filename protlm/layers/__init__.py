"""Flax building blocks shared by the model families (one concept per module)."""
from protlm.layers.attention import MultiHeadAttention, dot_product_attention, make_attention_mask
from protlm.layers.dense import DenseGeneral
from protlm.layers.embeddings import Embed
from protlm.layers.mlp import MlpBlock
from protlm.layers.norms import LayerNorm, RMSNorm
from protlm.layers.relative_position import RelativePositionBiases, relative_position_bucket

__all__ = [
    "DenseGeneral", "Embed", "LayerNorm", "MlpBlock", "MultiHeadAttention", "RMSNorm",
    "RelativePositionBiases", "dot_product_attention", "make_attention_mask",
    "relative_position_bucket",
]
