"""Probes trained on frozen features, as in the ProtTrans paper (flax + optax, CPU friendly).

* `ResidueCNN` (`protlm.finetune.heads`, the fine-tuning head too): the paper's two-layer CNN for
  per-residue secondary structure (conv k=7 to 32 channels, ReLU, dropout 0.25, conv k=7 to the
  classes).
* `ProteinFFN` (`protlm.finetune.heads`): the feed-forward network on mean-pooled embeddings for
  localization and membrane vs soluble (dense 32, dropout 0.25, ReLU, dense to the classes), as
  Light Attention's FFN.

Both are trained with Adam and early stopping on a validation split (best validation accuracy kept,
`patience` epochs without improvement stop the run). Residue batches are bucketed to a few fixed
lengths and sized by a token budget so that XLA compiles a bounded number of shapes.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from protlm.finetune.heads import ProteinFFN, ResidueCNN

log = logging.getLogger(__name__)

BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Probe hyper-parameters (paper values where the paper gives them)."""

    hidden: int = 32
    kernel_size: int = 7
    dropout: float = 0.25
    learning_rate: float = 1e-3
    max_epochs: int = 30
    patience: int = 3  # epochs without validation improvement before stopping
    min_delta: float = 1e-3  # smaller validation accuracy gains do not count as improvement
    tokens_per_batch: int = 4096  # residue probe: residues (padded) per batch
    batch_size: int = 64  # protein probe: proteins per batch
    seed: int = 0


# ------------------------------------------------------------------------------------ data


@dataclasses.dataclass
class ResidueData:
    """Per-protein arrays: features [L, D] (any float dtype), labels int [L], masks bool [L]."""

    features: list[np.ndarray]
    labels: list[np.ndarray]
    masks: list[np.ndarray]

    def __post_init__(self):
        if not (len(self.features) == len(self.labels) == len(self.masks)):
            raise ValueError("features, labels and masks must have one entry per protein")
        for i, (x, y, m) in enumerate(zip(self.features, self.labels, self.masks)):
            if not (x.shape[0] == len(y) == len(m)):
                raise ValueError(f"protein {i}: features {x.shape} / labels {len(y)} / mask {len(m)} lengths differ")

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, idx) -> "ResidueData":
        return ResidueData([self.features[i] for i in idx], [self.labels[i] for i in idx], [self.masks[i] for i in idx])


def bucket_length(length: int, buckets=BUCKETS) -> int:
    """Smallest bucket >= length (lengths past the largest bucket round up to a multiple of it)."""
    for b in buckets:
        if length <= b:
            return b
    return -(-length // buckets[-1]) * buckets[-1]


def residue_batches(lengths: list[int], tokens_per_batch: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Groups protein indices into batches of one bucket length each.

    Batch size for bucket b is max(1, tokens_per_batch // b). With `rng`, proteins are shuffled within
    buckets and the batch order is shuffled; without, order is by length (for prediction).
    """
    by_bucket: dict[int, list[int]] = {}
    order = np.argsort(lengths, kind="stable") if rng is None else rng.permutation(len(lengths))
    for i in order:
        by_bucket.setdefault(bucket_length(lengths[i]), []).append(int(i))
    batches = []
    for b, idx in sorted(by_bucket.items()):
        size = max(1, tokens_per_batch // b)
        batches += [idx[j : j + size] for j in range(0, len(idx), size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _pad_batch(data: ResidueData, idx: list[int], tokens_per_batch: int):
    """Arrays for one batch, padded to (fixed batch size, bucket length)."""
    lb = bucket_length(max(len(data.labels[i]) for i in idx))
    bsz = max(1, tokens_per_batch // lb)
    d = data.features[idx[0]].shape[1]
    x = np.zeros((bsz, lb, d), np.float32)
    valid = np.zeros((bsz, lb), bool)
    y = np.zeros((bsz, lb), np.int32)
    w = np.zeros((bsz, lb), np.float32)
    for r, i in enumerate(idx):
        n = len(data.labels[i])
        x[r, :n] = data.features[i]
        valid[r, :n] = True
        y[r, :n] = data.labels[i]
        w[r, :n] = data.masks[i]
    return x, valid, y, w


# ------------------------------------------------------------------------------------ training
# Jitted once per (module hyper-parameters, learning rate, shapes): flax modules are hashable
# dataclasses, so every probe with the same configuration (e.g. the CV folds) reuses the compilations.


@functools.partial(jax.jit, static_argnums=(0,))
def _apply(model: nn.Module, params, *inputs):
    return model.apply({"params": params}, *inputs)


def _masked_ce_step(model, learning_rate, params, opt_state, inputs, y, w, dropout_key):
    """One Adam step on the weighted mean cross entropy (weights 0 on padding/unresolved)."""

    def loss_fn(p):
        logits = model.apply({"params": p}, *inputs, deterministic=False, rngs={"dropout": dropout_key})
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return (ce * w).sum() / jnp.maximum(w.sum(), 1.0)

    tx = optax.adam(learning_rate)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnums=(0, 1))
def _residue_step(model, learning_rate, params, opt_state, x, valid, y, w, dropout_key):
    """x [B, L, D], valid/y/w [B, L]."""
    return _masked_ce_step(model, learning_rate, params, opt_state, (x, valid), y, w, dropout_key)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _protein_step(model, learning_rate, params, opt_state, x, y, w, dropout_key):
    """x [B, D], y/w [B]."""
    return _masked_ce_step(model, learning_rate, params, opt_state, (x,), y, w, dropout_key)


def _early_stopping(
    params, run_epoch: Callable, val_accuracy: Callable, config: ProbeConfig, name: str
) -> tuple[object, dict]:
    """Runs epochs until validation accuracy stops improving; returns the best params and a history."""
    best, best_acc, best_epoch, history = params, -1.0, -1, []
    gain_acc, gain_epoch = -1.0, -1  # last epoch that improved by at least min_delta
    for epoch in range(config.max_epochs):
        t0 = time.time()
        params, train_loss = run_epoch(params, epoch)
        acc = float(val_accuracy(params))
        history.append({"epoch": epoch, "train_loss": float(train_loss), "val_accuracy": acc})
        log.info("%s epoch %d: train loss %.4f, val acc %.4f (%.1fs)", name, epoch, train_loss, acc, time.time() - t0)
        if acc > best_acc:
            best, best_acc, best_epoch = params, acc, epoch
        if acc >= gain_acc + config.min_delta:
            gain_acc, gain_epoch = acc, epoch
        if epoch - gain_epoch >= config.patience:
            break
    return best, {"best_epoch": best_epoch, "best_val_accuracy": best_acc, "epochs": history}


class ResidueProbe:
    """A trained `ResidueCNN` (params + config) that predicts per-residue classes."""

    def __init__(self, num_classes: int, config: ProbeConfig = ProbeConfig()):
        self.config = config
        self.model = ResidueCNN(num_classes, config.hidden, config.kernel_size, config.dropout)
        self.params = None
        self.history: dict = {}

    def fit(self, train: ResidueData, val: ResidueData) -> "ResidueProbe":
        """Trains on `train`, early-stops on the pooled accuracy on `val`."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        key = jax.random.PRNGKey(cfg.seed)
        d = train.features[0].shape[1]
        params = nn.meta.unbox(
            self.model.init(key, jnp.zeros((1, 8, d)), jnp.ones((1, 8), bool))["params"])
        opt_state = optax.adam(cfg.learning_rate).init(params)

        lengths = [len(y) for y in train.labels]
        state = {"opt": opt_state, "key": key}

        def run_epoch(params, epoch):
            losses = []
            for idx in residue_batches(lengths, cfg.tokens_per_batch, rng):
                state["key"], sub = jax.random.split(state["key"])
                batch = _pad_batch(train, idx, cfg.tokens_per_batch)
                params, state["opt"], loss = _residue_step(self.model, cfg.learning_rate, params, state["opt"], *batch, sub)
                losses.append(loss)
            return params, float(np.mean(jax.device_get(losses)))

        def val_accuracy(params):
            self.params = params
            preds = self.predict(val)
            correct = sum(((p == y) & m).sum() for p, y, m in zip(preds, val.labels, val.masks))
            return correct / max(sum(m.sum() for m in val.masks), 1)

        self.params, self.history = _early_stopping(params, run_epoch, val_accuracy, cfg, "residue probe")
        return self

    def predict(self, data: ResidueData) -> list[np.ndarray]:
        """Per protein int32 [L] class predictions (order of `data`)."""
        if self.params is None:
            raise RuntimeError("call fit() before predict()")
        out: list[np.ndarray | None] = [None] * len(data)
        lengths = [len(y) for y in data.labels]
        for idx in residue_batches(lengths, self.config.tokens_per_batch, None):
            x, valid, _, _ = _pad_batch(data, idx, self.config.tokens_per_batch)
            pred = np.asarray(jnp.argmax(_apply(self.model, self.params, x, valid), axis=-1))  # [B, Lb]
            for r, i in enumerate(idx):
                out[i] = pred[r, : lengths[i]].astype(np.int32)
        return out  # type: ignore[return-value]


class ProteinProbe:
    """A trained `ProteinFFN` on per-protein vectors."""

    def __init__(self, num_classes: int, config: ProbeConfig = ProbeConfig()):
        self.config = config
        self.model = ProteinFFN(num_classes, config.hidden, config.dropout)
        self.params = None
        self.history: dict = {}

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> "ProteinProbe":
        """x [N, D] float, y [N] int; early-stops on accuracy on (x_val, y_val)."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        key = jax.random.PRNGKey(cfg.seed)
        x_train = np.asarray(x_train, np.float32)
        params = nn.meta.unbox(self.model.init(key, jnp.zeros((1, x_train.shape[1])))["params"])
        bsz = cfg.batch_size
        state = {"opt": optax.adam(cfg.learning_rate).init(params), "key": key}

        def run_epoch(params, epoch):
            perm = rng.permutation(len(x_train))
            losses = []
            for j in range(0, len(perm), bsz):
                idx = perm[j : j + bsz]
                # Fixed batch shape: pad the last batch with zero-weight rows.
                x = np.zeros((bsz, x_train.shape[1]), np.float32)
                y = np.zeros((bsz,), np.int32)
                w = np.zeros((bsz,), np.float32)
                x[: len(idx)], y[: len(idx)], w[: len(idx)] = x_train[idx], y_train[idx], 1.0
                state["key"], sub = jax.random.split(state["key"])
                params, state["opt"], loss = _protein_step(self.model, cfg.learning_rate, params, state["opt"], x, y, w, sub)
                losses.append(loss)
            return params, float(np.mean(jax.device_get(losses)))

        def val_accuracy(params):
            self.params = params
            return float((self.predict(x_val) == np.asarray(y_val)).mean())

        self.params, self.history = _early_stopping(params, run_epoch, val_accuracy, cfg, "protein probe")
        return self

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """float32 [N, C]."""
        if self.params is None:
            raise RuntimeError("call fit() before predict()")
        x = np.asarray(x, np.float32)
        bsz = 1024
        out = []
        for j in range(0, len(x), bsz):
            chunk = np.zeros((bsz, x.shape[1]), np.float32)
            n = min(bsz, len(x) - j)
            chunk[:n] = x[j : j + n]
            out.append(np.asarray(_apply(self.model, self.params, chunk))[:n])
        return np.concatenate(out) if out else np.zeros((0, self.model.num_classes), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """int32 [N] class predictions."""
        return self.predict_logits(x).argmax(-1).astype(np.int32)
