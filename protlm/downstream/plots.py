"""Figures: 2-D t-SNE projection of per-protein embeddings coloured by localization (as in the
paper), and confusion matrices. matplotlib with the Agg backend (no display needed); PNGs are
written to a temporary name and renamed.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    return plt


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=150, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N, D] -> [N, 2] with scikit-learn t-SNE (PCA to at most 50 dimensions first, for speed).

    Runs single-threaded: for a few thousand points OpenMP threads cost more than they bring (on a
    shared 2-core machine 10x more).
    """
    from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel
    from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
    from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel

    x = np.asarray(x, np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    with threadpool_limits(limits=1):
        if x.shape[1] > 50 and x.shape[0] > 50:
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def plot_projection(
    xy: np.ndarray, labels: np.ndarray, class_names: list[str], title: str, path: pathlib.Path
) -> pathlib.Path:
    """Scatter of a 2-D projection [N, 2], one colour per class (labels int [N])."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        sel = labels == c
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.7, color=cmap(c), label=f"{name} ({sel.sum()})")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, loc="best")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_confusion(cm: np.ndarray, class_names: list[str], title: str, path: pathlib.Path) -> pathlib.Path:
    """Row-normalised confusion matrix (true rows, predicted columns) with counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 2.0 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels=class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
