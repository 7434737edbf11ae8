import jax
import jax.numpy as jnp
import numpy as np

from protlm.downstream import probes


def test_residue_cnn_output_does_not_depend_on_padding():
    model = probes.ResidueCNN(3)
    x = np.random.default_rng(0).normal(size=(1, 20, 5)).astype(np.float32)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 5)), jnp.ones((1, 8), bool))["params"]
    short = model.apply({"params": params}, x[:, :12], jnp.ones((1, 12), bool))
    # Same protein in a longer padded row with garbage after the end.
    valid = np.zeros((1, 20), bool)
    valid[0, :12] = True
    padded = model.apply({"params": params}, x, valid)
    np.testing.assert_allclose(padded[0, :12], short[0], atol=1e-5)


def test_residue_batches_fixed_buckets_and_budget():
    lengths = [30, 70, 700, 5000, 64]
    batches = probes.residue_batches(lengths, 256, None)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        bucket = probes.bucket_length(max(lengths[i] for i in b))
        assert len(b) <= max(1, 256 // bucket)
    assert probes.bucket_length(5000) == 8192 and probes.bucket_length(64) == 64


def _window_task(n, rng):
    """Label of a residue = argmax of the summed features of itself and its neighbours."""
    feats, labels, masks = [], [], []
    for _ in range(n):
        length = int(rng.integers(20, 90))
        x = rng.normal(size=(length, 3)).astype(np.float32)
        s = x + np.pad(x, ((1, 0), (0, 0)))[:-1] + np.pad(x, ((0, 1), (0, 0)))[1:]
        feats.append(x)
        labels.append(s.argmax(1).astype(np.int32))
        masks.append(rng.random(length) > 0.1)
    return probes.ResidueData(feats, labels, masks)


def test_residue_probe_learns_a_local_rule():
    rng = np.random.default_rng(0)
    train, val, test = _window_task(200, rng), _window_task(40, rng), _window_task(40, rng)
    cfg = probes.ProbeConfig(max_epochs=15, patience=3, learning_rate=1e-2, tokens_per_batch=1024)
    probe = probes.ResidueProbe(3, cfg).fit(train, val)
    preds = probe.predict(test)
    acc = np.mean(np.concatenate([(p == y)[m] for p, y, m in zip(preds, test.labels, test.masks)]))
    assert acc > 0.85, (acc, probe.history)
    assert 0 <= probe.history["best_epoch"] < 15


def test_protein_probe_learns_separable_classes_and_is_seeded():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 8)) * 3
    y = rng.integers(0, 4, 600)
    x = (centers[y] + rng.normal(size=(600, 8))).astype(np.float32)
    cfg = probes.ProbeConfig(max_epochs=30, patience=5, batch_size=32)
    p1 = probes.ProteinProbe(4, cfg).fit(x[:400], y[:400], x[400:500], y[400:500])
    assert (p1.predict(x[500:]) == y[500:]).mean() > 0.9
    p2 = probes.ProteinProbe(4, cfg).fit(x[:400], y[:400], x[400:500], y[400:500])
    np.testing.assert_array_equal(p1.predict_logits(x[500:]), p2.predict_logits(x[500:]))
