"""State a model carries from step to step (Transformer-XL / XLNet memory): kept in the train
state, split across accumulation microbatches like the batch rows, checkpointed and resumed.

The stateful model here is a test family: ProtBert tiny whose carry counts, per batch row, the
tokens that row has seen, and whose loss depends on it (so a wrong carry changes the training).
"""
import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm import checkpoints, models, optimizers, partitioning, trainer
from protlm.data.batch_sources import ArraySource
from protlm.models import registry
from protlm.models.bert_family import BertFamily
from protlm.models.model import MaskedLMModel
from tests.trainer.synthetic import family_arrays


@dataclasses.dataclass(frozen=True)
class CountingConfig(models.BertConfig):
    family_name: ClassVar[str] = "test_counting"


class CountingModel(MaskedLMModel):
    def init_carry(self, batch_shapes):
        rows = batch_shapes["encoder_input_tokens"].shape[0]
        return {"seen": nn.LogicallyPartitioned(jnp.zeros((rows,), jnp.float32), ("batch",))}

    def loss_fn(self, params, batch, dropout_rng=None, training=True, normalizer=None,
                carry=None):
        loss, aux = super().loss_fn(params, batch, dropout_rng, training, normalizer)
        seen = carry["seen"] + jnp.sum(jnp.asarray(batch["encoder_input_tokens"]) > 0, axis=-1)
        # the loss depends on the carry: a carry split or restored wrongly changes the params
        loss = loss * (1.0 + 1e-3 * jnp.mean(jnp.log1p(carry["seen"])))
        return loss, {**aux, "carry": {"seen": seen}}

    def eval_sums(self, params, batch, carry=None):
        sums = super().eval_sums(params, batch)
        seen = carry["seen"] + jnp.sum(jnp.asarray(batch["encoder_input_tokens"]) > 0, axis=-1)
        return {**sums, "carry": {"seen": seen}}


class CountingFamily(BertFamily):
    name = "test_counting"
    config_cls = CountingConfig
    presets = {}

    def model(self, config):
        base = super().model(config)
        return CountingModel(config, base.module, base.mask_id)


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, CountingFamily.name, CountingFamily())
    fields = models.get_config("prot_bert_tiny").__dict__
    return CountingConfig(**fields)


def _run(model_dir, cfg, steps, accum_steps=1, partition=None):
    arrays = family_arrays(cfg, 64, 16, seed=1)
    out = trainer.train(
        model_dir=str(model_dir), model_config=cfg, data=ArraySource(arrays, arrays),
        train_steps=steps, batch_size=8, learning_rate=optimizers.constant_schedule(1e-2),
        optimizer=optimizers.lamb, partition=partition or partitioning.PartitionConfig(),
        checkpoint=checkpoints.CheckpointConfig(every_steps=2, keep=None),
        evaluation=trainer.EvalConfig(every_steps=steps, num_batches=2), accum_steps=accum_steps,
        log_every=1)
    return out, arrays


def _restore(model_dir, cfg, step):
    family = models.get_family(cfg)
    model = family.model(cfg)
    shapes = family.batch_shapes(cfg, {"inputs": 16}, 8, pack=False)
    partition = partitioning.PartitionConfig()
    mesh, rules = partition.mesh(), partition.logical_rules()
    tx = optimizers.lamb(optimizers.constant_schedule(1e-2))
    from protlm import train_state
    abstract, _ = train_state.state_shardings(model, tx, shapes, mesh, rules)
    with checkpoints.make_manager(model_dir, read_only=True) as mngr:
        state, _ = checkpoints.restore_state(mngr, step, abstract.to_dict())
    return jax.device_get(state)


def test_carry_counts_each_rows_tokens_and_is_checkpointed(tmp_path, counting):
    out, arrays = _run(tmp_path, counting, steps=4)
    assert out["status"] == "done"
    state = _restore(tmp_path, counting, 4)
    tokens = arrays["encoder_input_tokens"]
    expected = np.zeros(8)
    for b in range(4):   # ArraySource: global batch b is rows 8b .. 8b+7
        expected += (tokens[8 * b:8 * b + 8] > 0).sum(-1)
    np.testing.assert_array_equal(state["carry"]["seen"], expected)


def test_carry_with_accumulation_equals_one_pass(tmp_path, counting):
    _run(tmp_path / "one", counting, steps=2)
    _run(tmp_path / "accum", counting, steps=2, accum_steps=2)
    one, accum = _restore(tmp_path / "one", counting, 2), _restore(tmp_path / "accum", counting, 2)
    np.testing.assert_array_equal(one["carry"]["seen"], accum["carry"]["seen"])
    for a, b in zip(jax.tree_util.tree_leaves(one["params"]),
                    jax.tree_util.tree_leaves(accum["params"])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_resumed_run_continues_the_carry_exactly(tmp_path, counting):
    _run(tmp_path / "straight", counting, steps=4)
    _run(tmp_path / "resumed", counting, steps=2)
    _run(tmp_path / "resumed", counting, steps=4)      # resumes from the step-2 checkpoint
    a, b = _restore(tmp_path / "straight", counting, 4), _restore(tmp_path / "resumed", counting, 4)
    np.testing.assert_array_equal(a["carry"]["seen"], b["carry"]["seen"])
    for x, y in zip(jax.tree_util.tree_leaves(a["params"]), jax.tree_util.tree_leaves(b["params"])):
        np.testing.assert_array_equal(x, y)
