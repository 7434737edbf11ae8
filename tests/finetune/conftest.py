"""Shared pieces of the fine-tuning tests: a tiny base checkpoint and short in-process runs."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import pytest

from protlm import checkpoints, models, optimizers, partitioning, trainer
from protlm.finetune import (FinetuneModel, LoraConfig, TaskSource, checkpoint_config,
                             trainable_only)

MAX_LENGTH = 48
LIMIT = 16


def init_params(config, seed: int = 0) -> dict:
    """Unboxed random params of `config` (the family's pretraining model)."""
    family = models.get_family(config)
    shapes = family.batch_shapes(config, family.default_lengths(8), 2, pack=False)
    return nn.unbox(family.model(config).init(jax.random.key(seed), shapes)["params"])


def write_base(model_dir, preset: str = "prot_t5_tiny", **overrides):
    """A protlm model directory holding a random-init `preset` (the INIT_CHECKPOINT)."""
    config = models.get_config(preset, **overrides)
    checkpoints.save_params(model_dir, init_params(config), config)
    return config


def run(model_dir, base_dir, mode: str, task: str = "secondary_structure", steps: int = 3,
        head=None, rank: int = 4, data_root=None, overrides=None, checkpoint_every: int = 1000,
        lr: float = 1e-2) -> tuple[FinetuneModel, dict]:
    """`steps` fine-tuning steps from `base_dir` (8 fake devices, batch 8)."""
    config = checkpoint_config(str(base_dir), overrides)
    model = FinetuneModel(config, mode, LoraConfig(rank=rank, alpha=2.0 * rank), task, head)
    result = trainer.train(
        model_dir=str(model_dir), model_config=config, model=model,
        data=TaskSource(task, config, MAX_LENGTH, str(data_root) if data_root else None, LIMIT),
        train_steps=steps, batch_size=8, learning_rate=optimizers.constant_schedule(lr),
        optimizer=functools.partial(trainable_only, mode=mode),
        partition=partitioning.PartitionConfig(),
        checkpoint=checkpoints.CheckpointConfig(every_steps=checkpoint_every, keep=None,
                                                init_from=str(base_dir)),
        evaluation=trainer.EvalConfig(every_steps=0), log_every=1)
    assert result["status"] == "done", result
    return model, result


@pytest.fixture(scope="session")
def t5_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5_base")
    write_base(path, "prot_t5_tiny")
    return path
