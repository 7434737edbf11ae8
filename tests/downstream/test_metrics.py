import numpy as np
import pytest

from protlm.downstream import metrics


def test_residue_accuracy_pools_residues_and_skips_masked():
    preds = [np.array([0, 1, 2, 2]), np.array([1, 1])]
    labels = [np.array([0, 1, 0, 0]), np.array([1, 0])]
    masks = [np.array([True, True, True, False]), np.array([True, True])]
    m = metrics.residue_accuracy(preds, labels, masks)
    assert m["value"] == pytest.approx(100 * 3 / 5)
    assert m["n_scored"] == 5 and m["n_proteins"] == 2
    assert m["ci_low"] <= m["value"] <= m["ci_high"]


def test_bootstrap_ci_shrinks_with_more_proteins():
    rng = np.random.default_rng(0)
    small = metrics.protein_accuracy(rng.integers(0, 2, 50), rng.integers(0, 2, 50))
    big = metrics.protein_accuracy(rng.integers(0, 2, 5000), rng.integers(0, 2, 5000))
    assert big["ci_high"] - big["ci_low"] < (small["ci_high"] - small["ci_low"]) / 4
    assert 45 < big["value"] < 55


def test_bootstrap_is_deterministic_for_a_seed():
    c, t = np.array([3.0, 1.0, 4.0]), np.array([4.0, 2.0, 5.0])
    assert metrics.bootstrap_accuracy(c, t, seed=1) == metrics.bootstrap_accuracy(c, t, seed=1)


def test_confusion_matrix_counts():
    cm = metrics.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])


def test_nothing_to_score_is_an_error():
    with pytest.raises(ValueError, match="nothing to score"):
        metrics.bootstrap_accuracy(np.zeros(2), np.zeros(2))
