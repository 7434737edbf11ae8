"""Accuracy metrics of the paper (Q3, Q8 per residue; Q10, Q2 per protein) with bootstrap 95 % CIs.

Per-residue accuracy pools residues over the whole test set (unresolved residues excluded). The
bootstrap resamples *proteins* with replacement (residues of one protein are not independent), and
recomputes the pooled accuracy; the interval is the 2.5 / 97.5 percentile of 1,000 resamples.
"""
from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 1000


def bootstrap_accuracy(correct: np.ndarray, total: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Pooled accuracy sum(correct)/sum(total) with a bootstrap over items (proteins).

    Args:
      correct: [N] number of correct predictions per protein (0/1 for per-protein tasks).
      total: [N] number of scored predictions per protein.
      n_boot: bootstrap resamples.
      seed: RNG seed (fixed so reruns give identical intervals).

    Returns:
      {"value", "ci_low", "ci_high", "stderr"} in percent, "n_proteins", "n_scored".
    """
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    if correct.shape != total.shape or correct.ndim != 1:
        raise ValueError(f"correct {correct.shape} and total {total.shape} must be equal 1-D shapes")
    if total.sum() <= 0:
        raise ValueError("nothing to score: every item has zero scored predictions")
    value = correct.sum() / total.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))  # [n_boot, N]
    boot = correct[idx].sum(axis=1) / np.maximum(total[idx].sum(axis=1), 1e-12)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "value": 100.0 * value,
        "ci_low": 100.0 * low,
        "ci_high": 100.0 * high,
        "stderr": 100.0 * boot.std(ddof=1),
        "n_proteins": int(len(correct)),
        "n_scored": int(total.sum()),
    }


def residue_accuracy(
    predictions: list[np.ndarray], labels: list[np.ndarray], masks: list[np.ndarray], seed: int = 0
) -> dict:
    """Q3 / Q8: pooled per-residue accuracy over masked-in residues, with a protein bootstrap CI.

    Args:
      predictions, labels: per protein int [L].
      masks: per protein bool [L]; False residues (unresolved) are not scored.
    """
    correct = np.array([((p == y) & m).sum() for p, y, m in zip(predictions, labels, masks)])
    total = np.array([m.sum() for m in masks])
    keep = total > 0  # proteins without a resolved residue do not count as proteins
    return bootstrap_accuracy(correct[keep], total[keep], seed=seed)


def protein_accuracy(predictions: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Q10 / Q2: fraction of proteins predicted correctly, with a bootstrap CI."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return bootstrap_accuracy((predictions == labels).astype(np.float64), np.ones(len(labels)), seed=seed)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [num_classes (true), num_classes (predicted)] counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def format_metric(m: dict) -> str:
    """'81.2 [80.1, 82.3]' (percent, 95 % CI)."""
    return f"{m['value']:.1f} [{m['ci_low']:.1f}, {m['ci_high']:.1f}]"
