"""Shared helpers for the trainer tests: tiny runs on pre-tokenised arrays."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from protlm import checkpoints, models, optimizers, partitioning, trainer
from protlm.data.batch_sources import ArraySource
from tests.trainer.synthetic import family_arrays


def run(model_dir, preset="prot_t5_tiny", steps=5, batch_size=8, partition=None,
        checkpoint_every=1000, eval_every=0, lr=1e-2, accum_steps=1, seed=0,
        prng_impl="threefry2x32", restart_data=False, **config):
    """Train a tiny preset on synthetic arrays; returns the train() result."""
    cfg = models.get_config(preset, **config)
    return trainer.train(
        model_dir=str(model_dir), model_config=cfg,
        data=ArraySource(family_arrays(cfg, 64, 16, seed=1), family_arrays(cfg, 16, 16, seed=2)),
        train_steps=steps, batch_size=batch_size,
        learning_rate=optimizers.constant_schedule(lr),
        optimizer=optimizers.adafactor if preset.startswith("prot_t5") else optimizers.lamb,
        partition=partition or partitioning.PartitionConfig(),
        checkpoint=checkpoints.CheckpointConfig(every_steps=checkpoint_every, keep=None,
                                                restart_data=restart_data),
        evaluation=trainer.EvalConfig(every_steps=eval_every, num_batches=2),
        accum_steps=accum_steps, seed=seed, log_every=1, prng_impl=prng_impl)


def losses(model_dir) -> list[float]:
    path = pathlib.Path(model_dir) / "metrics" / "train.jsonl"
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


def max_abs_diff(a, b) -> float:
    import jax
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(la, lb))
