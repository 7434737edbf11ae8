"""Evo-tuning: a released model continues its own pretraining objective on new sequences (LoRA or
full), through the ordinary trainer, starting from INIT_CHECKPOINT."""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from protlm import checkpoints, optimizers, partitioning, trainer
from protlm.data.batch_sources import ArraySource
from protlm.finetune import FinetuneModel, LoraConfig, checkpoint_config, trainable_only
from tests.trainer import helpers
from tests.trainer.synthetic import family_arrays


def _evotune(model_dir, base_dir, mode: str, steps: int = 6):
    config = checkpoint_config(str(base_dir))
    model = FinetuneModel(config, mode, LoraConfig(rank=2, alpha=4.0), None, None)
    result = trainer.train(
        model_dir=str(model_dir), model_config=config, model=model,
        data=ArraySource(family_arrays(config, 64, 16, seed=1), family_arrays(config, 16, 16, seed=2)),
        train_steps=steps, batch_size=8, learning_rate=optimizers.constant_schedule(3e-2),
        optimizer=functools.partial(trainable_only, mode=mode),
        partition=partitioning.PartitionConfig(data=4, model=2),
        checkpoint=checkpoints.CheckpointConfig(every_steps=1000, keep=None,
                                                init_from=str(base_dir)),
        evaluation=trainer.EvalConfig(every_steps=steps), log_every=1)
    assert result["status"] == "done", result
    return result


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_evotuning_continues_the_objective_from_the_checkpoint(mode, tmp_path, t5_base):
    result = _evotune(tmp_path / mode, t5_base, mode)
    losses = helpers.losses(tmp_path / mode)
    assert len(losses) == 6 and losses[-1] < losses[0], losses      # the objective goes down
    assert np.isfinite(result["eval"]["loss"])
    base = _flat(checkpoints.load_params(t5_base)[0])
    tuned_tree = checkpoints.load_params(tmp_path / mode)[0]
    tuned = _flat(tuned_tree["backbone"])
    # the whole pretraining model is the backbone (decoder included): every base weight is there
    assert set(tuned) == set(base)
    moved = [k for k in base if tuned[k].tobytes() != base[k].tobytes()]
    if mode == "lora":
        assert not moved                                                # base weights frozen
        factors = _flat(tuned_tree["lora"])
        assert any("decoder" in k for k in factors) and any("encoder" in k for k in factors)
        assert any(np.abs(v).max() > 0 for v in factors.values())      # b moved off zero
    else:
        assert len(moved) == len(base)                                  # every weight trained
