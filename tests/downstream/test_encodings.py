import numpy as np
import pytest

from protlm.downstream import encodings


def test_onehot_standard_and_other_column():
    x = encodings.onehot("ACy*XU")
    assert x.shape == (6, 21) and x.dtype == np.float32
    np.testing.assert_array_equal(x.sum(1), np.ones(6))
    assert x[0, encodings.STANDARD.index("A")] == 1
    assert x[2, encodings.STANDARD.index("Y")] == 1  # lower case maps like upper case
    assert (x[3:, 20] == 1).all()  # '*', X, U -> the 'other' column


def test_blosum62_known_entries_and_aliases():
    m = encodings.BLOSUM62
    order = encodings.BLOSUM62_ORDER
    assert m[order.index("W"), order.index("W")] == 11
    assert m[order.index("C"), order.index("C")] == 9
    assert m[order.index("A"), order.index("R")] == -1
    assert m[order.index("E"), order.index("Z")] == 4
    x = encodings.blosum62("WU")
    assert x.shape == (2, 24)
    np.testing.assert_allclose(x[0], m[order.index("W")] / encodings.BLOSUM62_SCALE)
    np.testing.assert_allclose(x[1], m[order.index("X")] / encodings.BLOSUM62_SCALE)  # U has no row: X


def test_encode_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown encoding"):
        encodings.encode("esm", "ACD")
