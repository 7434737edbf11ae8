import h5py
import numpy as np
import pytest

from protlm.downstream import features


def _h5(path, items, **attrs):
    with h5py.File(path, "w") as f:
        f.attrs.update(attrs)
        for k, v in items.items():
            f.create_dataset(k, data=v)
    return path


def test_h5_features_lookup_by_sanitised_id_and_pooling(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = _h5(tmp_path / "e.h5", {"sp|P1_2": x}, model="m", layer=-1)
    src = features.H5Features([path])
    np.testing.assert_array_equal(src.residue("sp|P1.2", "MKTA"), x)
    np.testing.assert_allclose(src.protein("sp|P1.2", "MKTA"), x.mean(0))
    assert src.description["model"] == "m" and src.description["layer"] == -1
    with pytest.raises(features.FeatureError, match="has 4 residues, the data set 5"):
        src.residue("sp|P1.2", "MKTAV")
    with pytest.raises(features.FeatureError, match=r"'Q9' \(h5 key 'Q9'\) is in none of"):
        src.protein("Q9", "MK")
    src.close()


def test_per_protein_file_cannot_feed_a_residue_task(tmp_path):
    path = _h5(tmp_path / "p.h5", {"P1": np.ones(3, np.float32)})
    src = features.H5Features([path])
    np.testing.assert_array_equal(src.protein("P1", "MKT"), np.ones(3))
    with pytest.raises(features.FeatureError, match="needs per-residue embeddings"):
        src.residue("P1", "MKT")
    src.close()


def test_open_features_needs_exactly_one_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        features.open_features(None, None)
    with pytest.raises(FileNotFoundError, match="python -m protlm.embed"):
        features.open_features([str(tmp_path / "missing.h5")], None)
    assert features.open_features(None, "onehot").residue("x", "MK").shape == (2, 21)
