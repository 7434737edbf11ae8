"""The bucket function equals transformers' T5 `_relative_position_bucket`."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from protlm.layers.relative_position import RelativePositionBiases, relative_position_bucket


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (64, 256)])
def test_bucket_matches_transformers(bidirectional, num_buckets, max_distance):
    distances = np.arange(-1000, 1001)
    ours = np.asarray(relative_position_bucket(jnp.asarray(distances), bidirectional,
                                               num_buckets, max_distance))
    ref = T5Attention._relative_position_bucket(
        torch.tensor(distances), bidirectional=bidirectional, num_buckets=num_buckets,
        max_distance=max_distance)
    np.testing.assert_array_equal(ours, ref.numpy())
    assert ours.min() >= 0 and ours.max() < num_buckets
    if not bidirectional:
        assert (ours[distances > 0] == 0).all()  # every future offset shares bucket 0


def test_bias_module_shapes_and_values():
    import jax
    mod = RelativePositionBiases(num_buckets=32, max_distance=128, num_heads=3)
    pos = jnp.arange(10)[None]
    variables = mod.init(jax.random.PRNGKey(0), pos, pos, True)
    bias = mod.apply(variables, pos, pos, True)
    assert bias.shape == (1, 3, 10, 10)
    table = variables["params"]["rel_embedding"].value  # [heads, buckets]
    bucket = relative_position_bucket(pos[0][None, :] - pos[0][:, None], True)
    np.testing.assert_allclose(bias[0, 1], table[1][bucket])
    # Packed positions restart per segment: identical offsets give identical biases.
    packed = jnp.asarray([[0, 1, 2, 0, 1, 2]])
    b2 = mod.apply(variables, packed, packed, True)
    np.testing.assert_allclose(b2[0, :, :3, :3], b2[0, :, 3:, 3:])
