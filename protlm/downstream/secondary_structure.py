"""Per-residue secondary structure: Q3 and Q8 with the paper's two-layer CNN on frozen features.

Protocol (and its deviations from the paper, which had 8-state training labels):
  * Q3: train on the FLIP/NetSurfP-2.0 training split (3-state), early-stop on its VALIDATION=True
    part, test on CASP12, TS115, CB513 (432 distinct proteins) and NEW364 (FLIP's test split).
  * Q8 (deviation: no 8-state training labels in ../shared/data):
    - CB513 (CV): 5-fold cross-validation over the 432 distinct CB513 proteins (in each fold 10 % of
      the training folds are held out for early stopping); out-of-fold predictions are scored together.
    - CASP12 / TS115: a probe trained on all of CB513 (10 % held out for early stopping).
Unresolved residues (`disorder` 0.0 in the CSVs, mask 0 in FLIP) are excluded from training and scoring.
"""
from __future__ import annotations

import logging
import pathlib
import time

import numpy as np

from protlm.downstream import datasets, metrics, plots
from protlm.downstream.probes import ProbeConfig, ResidueData, ResidueProbe

log = logging.getLogger(__name__)

Q3_TEST_SETS = ("CASP12", "TS115", "CB513", "NEW364")
Q8_TEST_SETS = ("CASP12", "TS115")
DEFAULT_CONFIG = ProbeConfig(max_epochs=30, patience=3)
CV_FOLDS = 5
EARLY_STOP_FRACTION = 0.1
DEVIATIONS = [
    "No 8-state training labels exist in ../shared/data (NetSurfP-2.0 Train_HHblits is missing), so Q8 is "
    "not trained on NetSurfP-2.0: 'Q8 CB513' is 5-fold cross-validation over the 432 distinct CB513 "
    "proteins and 'Q8 CASP12/TS115' come from a probe trained on all of CB513.",
    "CB513 has 511 rows but 432 distinct sequences (duplicates carry identical labels); each is scored once.",
    "Q3 training uses FLIP's NetSurfP-2.0 split (9,712 train / 1,080 validation), 3-state labels only.",
]


def _residue_data(records: list[datasets.ResidueRecord], features, cache: dict) -> ResidueData:
    feats = []
    for r in records:
        if r.id not in cache:
            cache[r.id] = features.residue(r.id, r.sequence)
        feats.append(cache[r.id])
    return ResidueData(feats, [r.labels for r in records], [r.mask for r in records])


def _split_for_early_stopping(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_val = max(1, int(round(EARLY_STOP_FRACTION * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _fit_early_stopped(data: ResidueData, num_classes: int, config: ProbeConfig, rng) -> ResidueProbe:
    fit_idx, val_idx = _split_for_early_stopping(len(data), rng)
    return ResidueProbe(num_classes, config).fit(data.subset(fit_idx), data.subset(val_idx))


def _score(probe: ResidueProbe, data: ResidueData, num_classes: int, seed: int) -> tuple[dict, np.ndarray]:
    preds = probe.predict(data)
    m = metrics.residue_accuracy(preds, data.labels, data.masks, seed=seed)
    y = np.concatenate([lab[mask] for lab, mask in zip(data.labels, data.masks)])
    p = np.concatenate([pr[mask] for pr, mask in zip(preds, data.masks)])
    return m, metrics.confusion_matrix(y, p, num_classes)


def run(
    features,
    data_root: pathlib.Path,
    config: ProbeConfig = DEFAULT_CONFIG,
    limit: int | None = None,
    plots_dir: pathlib.Path | None = None,
) -> dict:
    """Trains the Q3 and Q8 probes and scores every test set.

    Args:
      features: an object with `residue(id, sequence) -> [L, d]` (see protlm.downstream.features).
      data_root: the shared data folder.
      config: probe hyper-parameters and seed.
      limit: use only the first `limit` proteins of each split (smoke tests).
      plots_dir: where to write confusion-matrix PNGs (None: no plots).

    Returns:
      {"q3": {set: metric}, "q8": {set: metric}, "training": ..., "deviations": [...], "plots": [...]}.
    """
    t0 = time.time()
    sets = datasets.load_secondary_structure(data_root)
    if limit:
        sets = {k: datasets.subsample(v, limit) for k, v in sets.items()}
    cache: dict = {}
    data = {k: _residue_data(v, features, cache) for k, v in sets.items()}
    log.info("secondary structure: features for %d proteins loaded (%.1fs)", len(cache), time.time() - t0)
    rng = np.random.default_rng(config.seed)
    results: dict = {"q3": {}, "q8": {}, "training": {}, "confusion": {}, "deviations": DEVIATIONS}

    # ---- Q3: FLIP / NetSurfP-2.0 train -> CASP12, TS115, CB513, NEW364.
    probe3 = ResidueProbe(3, config).fit(data["flip_train/3"], data["flip_validation/3"])
    results["training"]["q3"] = probe3.history
    for name in Q3_TEST_SETS:
        m, cm = _score(probe3, data[f"{name}/3"], 3, config.seed)
        results["q3"][name], results["confusion"][f"q3_{name}"] = m, cm.tolist()
        log.info("Q3 %s: %s", name, metrics.format_metric(m))

    # ---- Q8 (deviation): 5-fold CV on CB513, and CB513 -> CASP12, TS115.
    cb513 = data["CB513/8"]
    fold_of = rng.permutation(len(cb513)) % CV_FOLDS
    oof: list = [None] * len(cb513)
    histories = []
    for fold in range(CV_FOLDS):
        train_idx, test_idx = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        probe = _fit_early_stopped(cb513.subset(train_idx), 8, config, rng)
        histories.append(probe.history)
        for i, pred in zip(test_idx, probe.predict(cb513.subset(test_idx))):
            oof[i] = pred
    results["q8"]["CB513"] = metrics.residue_accuracy(oof, cb513.labels, cb513.masks, seed=config.seed)
    results["q8"]["CB513"]["protocol"] = f"{CV_FOLDS}-fold cross-validation"
    y = np.concatenate([lab[m] for lab, m in zip(cb513.labels, cb513.masks)])
    p = np.concatenate([pr[m] for pr, m in zip(oof, cb513.masks)])
    results["confusion"]["q8_CB513"] = metrics.confusion_matrix(y, p, 8).tolist()
    results["training"]["q8_cv"] = histories
    log.info("Q8 CB513 (CV): %s", metrics.format_metric(results["q8"]["CB513"]))
    probe8 = _fit_early_stopped(cb513, 8, config, rng)
    results["training"]["q8"] = probe8.history
    for name in Q8_TEST_SETS:
        m, cm = _score(probe8, data[f"{name}/8"], 8, config.seed)
        m["protocol"] = "trained on CB513"
        results["q8"][name], results["confusion"][f"q8_{name}"] = m, cm.tolist()
        log.info("Q8 %s: %s", name, metrics.format_metric(m))

    if plots_dir is not None:
        results["plots"] = [
            str(plots.plot_confusion(np.array(results["confusion"]["q3_CB513"]), list(datasets.SS3_CLASSES),
                                     "Q3 confusion, CB513", pathlib.Path(plots_dir) / "confusion_q3_CB513.png")),
            str(plots.plot_confusion(np.array(results["confusion"]["q8_CB513"]), list(datasets.SS8_CLASSES),
                                     "Q8 confusion, CB513 (5-fold CV)", pathlib.Path(plots_dir) / "confusion_q8_CB513.png")),
        ]
    results["runtime_s"] = time.time() - t0
    return results
