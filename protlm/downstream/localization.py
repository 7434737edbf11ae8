"""Per-protein localization (Q10) and membrane-bound vs soluble (Q2) on DeepLoc 1.0.

Light Attention protocol: train on the DeepLoc 1.0 training split (here the 9,176-protein
reconstruction), early-stop on LA's validation split (Cytoplasm-Nucleus dropped), test on the 2,768
test proteins. Q2 uses only proteins labelled M or S in each split. The feature is the mean-pooled
embedding; the probe the paper's FFN.
"""
from __future__ import annotations

import logging
import pathlib
import time

import numpy as np

from protlm.downstream import datasets, metrics, plots
from protlm.downstream.probes import ProbeConfig, ProteinProbe

log = logging.getLogger(__name__)

DEVIATIONS = [
    "DeepLoc 1.0 training split reconstructed (9,176 of 9,503 proteins; sequences from UniProt/DeepLoc 2.0; "
    "membrane labels from DeepLoc 2.0), see ../shared/data/deeploc/deeploc1_train_reconstructed/README.md.",
    "Validation: Light Attention's split with the 23 Cytoplasm-Nucleus proteins dropped.",
]
# One epoch of the FFN is ~150 small steps, so it gets many more epochs than the residue CNN.
DEFAULT_CONFIG = ProbeConfig(max_epochs=200, patience=20)


def _matrix(records: list[datasets.ProteinRecord], features) -> np.ndarray:
    """float32 [N, d] per-protein features."""
    return np.stack([np.asarray(features.protein(r.id, r.sequence), np.float32) for r in records])


def run(
    features,
    data_root: pathlib.Path,
    config: ProbeConfig = DEFAULT_CONFIG,
    limit: int | None = None,
    plots_dir: pathlib.Path | None = None,
) -> dict:
    """Trains the Q10 and Q2 probes on DeepLoc and scores the test split.

    Args:
      features: an object with `protein(id, sequence) -> [d]` (see protlm.downstream.features).
      data_root: the shared data folder.
      config: probe hyper-parameters and seed.
      limit: use only the first `limit` proteins of each split (smoke tests).
      plots_dir: where to write the t-SNE projection and confusion matrices (None: no plots).

    Returns:
      {"q10": {"DeepLoc": metric}, "q2": {"DeepLoc": metric}, "training": ..., "plots": [...]}.
    """
    t0 = time.time()
    splits = datasets.load_deeploc(data_root)
    if limit:
        splits = {k: datasets.subsample(v, limit) for k, v in splits.items()}
    x = {k: _matrix(v, features) for k, v in splits.items()}
    loc = {k: np.array([r.location for r in v], np.int32) for k, v in splits.items()}
    ms = {k: np.array([r.membrane in datasets.MEMBRANE_CLASSES for r in v]) for k, v in splits.items()}
    mem = {k: np.array([datasets.MEMBRANE_CLASSES.index(r.membrane) if r.membrane in datasets.MEMBRANE_CLASSES
                        else -1 for r in v], np.int32) for k, v in splits.items()}
    log.info("localization: features %s loaded (%.1fs)", {k: v.shape for k, v in x.items()}, time.time() - t0)
    results: dict = {"q10": {}, "q2": {}, "training": {}, "confusion": {}, "deviations": DEVIATIONS}

    p10 = ProteinProbe(len(datasets.LOCATIONS), config).fit(x["train"], loc["train"], x["validation"], loc["validation"])
    pred10 = p10.predict(x["test"])
    results["q10"]["DeepLoc"] = metrics.protein_accuracy(pred10, loc["test"], seed=config.seed)
    results["confusion"]["q10"] = metrics.confusion_matrix(loc["test"], pred10, len(datasets.LOCATIONS)).tolist()
    results["training"]["q10"] = p10.history
    log.info("Q10 DeepLoc: %s", metrics.format_metric(results["q10"]["DeepLoc"]))

    p2 = ProteinProbe(2, config).fit(x["train"][ms["train"]], mem["train"][ms["train"]],
                                     x["validation"][ms["validation"]], mem["validation"][ms["validation"]])
    pred2 = p2.predict(x["test"][ms["test"]])
    results["q2"]["DeepLoc"] = metrics.protein_accuracy(pred2, mem["test"][ms["test"]], seed=config.seed)
    results["confusion"]["q2"] = metrics.confusion_matrix(mem["test"][ms["test"]], pred2, 2).tolist()
    results["training"]["q2"] = p2.history
    log.info("Q2 DeepLoc: %s", metrics.format_metric(results["q2"]["DeepLoc"]))

    if plots_dir is not None:
        plots_dir = pathlib.Path(plots_dir)
        names = list(datasets.LOCATIONS)
        t1 = time.time()
        xy = plots.tsne_2d(x["test"], seed=config.seed)
        log.info("t-SNE of %d test proteins: %.1fs", len(xy), time.time() - t1)
        results["plots"] = [
            str(plots.plot_projection(xy, loc["test"], names, "DeepLoc test: t-SNE of per-protein features",
                                      plots_dir / "tsne_localization.png")),
            str(plots.plot_confusion(np.array(results["confusion"]["q10"]), names, "Q10 confusion, DeepLoc test",
                                     plots_dir / "confusion_q10.png")),
            str(plots.plot_confusion(np.array(results["confusion"]["q2"]), ["membrane", "soluble"],
                                     "Q2 confusion, DeepLoc test (M/S only)", plots_dir / "confusion_q2.png")),
        ]
    results["runtime_s"] = time.time() - t0
    return results
