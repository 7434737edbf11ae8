"""Test-set scoring of a fine-tuned model, and its export as plain weights.

`evaluate` predicts every test set of a task with the whole sequences (no cropping; rows bucketed
to a few lengths so XLA compiles a bounded number of shapes) and returns the result dict of
`protlm.downstream` (`{"q3": {"CASP12": {"value", "ci_low", "ci_high", ...}}, ...}`, bootstrap
95 % CIs over proteins from `protlm.downstream.metrics`), so a fine-tuned model and a
frozen-embedding probe compare row by row (`protlm.downstream.report`).
`export_merged` writes the LoRA-merged backbone as an ordinary protlm model directory
(`python -m protlm.export_hf` and `protlm.embed` read it like any other).
"""
from __future__ import annotations

import logging
import pathlib
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from protlm import checkpoints
from protlm.downstream import metrics
from protlm.finetune import tasks as tasks_lib
from protlm.models import scan_utils

log = logging.getLogger(__name__)
MIN_BUCKET = 64


def _bucket(n: int) -> int:
    return max(MIN_BUCKET, 1 << (int(n) - 1).bit_length())


def predict(model, params, records, task: tasks_lib.Task, tokens_per_batch: int = 16384
            ) -> list[np.ndarray]:
    """Class predictions per record: `[L]` int per residue, or `[]`-shaped int per protein."""
    logits_fn = jax.jit(lambda p, b: jnp.argmax(model.logits(p, b, None), axis=-1))
    specials = model.family.num_special_tokens()
    order = sorted(range(len(records)), key=lambda i: len(records[i].sequence))
    out: list = [None] * len(records)
    i = 0
    while i < len(order):
        length = _bucket(len(records[order[i]].sequence) + specials)
        rows = max(1, tokens_per_batch // length)
        group = [j for j in order[i:i + rows] if _bucket(len(records[j].sequence) + specials)
                 == length]
        batch = tasks_lib.encode([records[j] for j in group], task, model.family, length)
        pred = np.asarray(logits_fn(params, {k: jnp.asarray(v) for k, v in batch.items()}))
        for row, j in enumerate(group):
            if task.level == "residue":
                offset = int(np.argmax(batch["residue_mask"][row]))
                out[j] = pred[row, offset:offset + len(records[j].sequence)]
            else:
                out[j] = pred[row]
        i += len(group)
    return out


def evaluate(model, params, task_name: str, data_root: Optional[str] = None,
             limit: Optional[int] = None, seed: int = 0) -> dict:
    """The task's test sets scored as `protlm.downstream` scores its probes."""
    task = tasks_lib.get_task(task_name)
    splits = tasks_lib.load_splits(task_name, data_root, limit)
    t0 = time.time()
    results: dict = {task.metric: {}, "task": task_name, "limit": limit}
    for name in task.test_sets:
        records = splits[name]
        preds = predict(model, params, records, task)
        if task.level == "residue":
            m = metrics.residue_accuracy(preds, [r.labels for r in records],
                                         [r.mask for r in records], seed=seed)
        else:
            labels, weights = zip(*(task.label(r) for r in records))
            keep = np.asarray(weights) > 0
            m = metrics.protein_accuracy(np.asarray(preds)[keep], np.asarray(labels)[keep],
                                         seed=seed)
        results[task.metric][name] = m
        log.info("%s %s: %s", task.metric.upper(), name, metrics.format_metric(m))
    results["runtime_s"] = time.time() - t0
    return results


def merged_backbone(model, params) -> dict:
    """Plain, unscanned family params: the backbone with LoRA merged in (host numpy)."""
    backbone = model.effective_params(params)
    tree = jax.device_get(backbone)
    if getattr(model.config, "scan_layers", False):
        tree = scan_utils.unstack_layers(tree)
    return jax.tree_util.tree_map(np.asarray, tree)


def export_merged(model, params, output_dir: str | pathlib.Path, step: int = 0) -> pathlib.Path:
    """Write the merged backbone as a protlm model directory (params-only checkpoint +
    config.json); `python -m protlm.export_hf --checkpoint_dir OUTPUT_DIR` makes it HF."""
    path = checkpoints.save_params(output_dir, merged_backbone(model, params), model.config, step)
    log.info("merged %s backbone written to %s", model.mode, path)
    return path
