"""ProtTXL: segment recurrence equals one long pass, slow reference, masks, padding."""
import dataclasses

import flax.linen as nn
import jax
import numpy as np
import pytest

import protlm.models as M
from protlm.data import causal_lm
from protlm.data import tokens as tok
from protlm.models import txl
from tests.models import xl_reference
from tests.models.conftest import key, perturbed

SEQS = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGG",
        "MAXUKLLLLAAAGGGQQQWWERTY"]


@pytest.fixture(scope="module")
def tiny():
    cfg = M.get_config("prot_txl_tiny", dropout_rate=0.0)
    model = M.get_model(cfg)
    batch = causal_lm.single_protein_rows(SEQS, 8)
    params = nn.meta.unbox(jax.jit(model.init)(key(0), batch)["params"])
    return cfg, model, perturbed(params)


def _segments(length: int, count: int) -> list[dict]:
    rows = causal_lm.single_protein_rows(SEQS, length * count)
    return [{k: v[:, s * length:(s + 1) * length] for k, v in rows.items()} for s in range(count)]


def test_memory_makes_next_segment_equal_one_long_pass(tiny):
    """Segments of 8 with mem_len 16: segment 3 read with the carried memory gives the logits of
    one pass over all 24 tokens (everything before it lies within the memory window)."""
    cfg, model, params = tiny
    assert cfg.mem_len == 16
    segs = _segments(8, 3)
    carry = nn.meta.unbox(model.init_carry(segs[0]))
    fwd = jax.jit(model.forward)
    chained = []
    for seg in segs:
        logits, carry = fwd(params, seg, carry)
        chained.append(np.asarray(logits))
    long = {k: np.concatenate([s[k] for s in segs], 1) for k in segs[0]}
    full = np.asarray(model.logits(params, long))
    for s in range(3):
        np.testing.assert_allclose(chained[s], full[:, 8 * s:8 * (s + 1)], rtol=1e-5, atol=1e-5)
    assert carry["valid"].tolist() == [16, 16, 16]


def test_memory_window_limits_the_context(tiny):
    """mem_len 4 < segment 8: the first layer of segment 2 sees exactly the last 4 tokens of
    segment 1 (a long pass with keys older than that hidden gives the same first-layer output)."""
    cfg, model, params = tiny
    small = M.get_model(dataclasses.replace(cfg, mem_len=4, num_layers=1))
    p1 = {k: v for k, v in params.items() if k != "layers_1"}
    segs = _segments(8, 2)
    carry = nn.meta.unbox(small.init_carry(segs[0]))
    _, carry = small.forward(p1, segs[0], carry)
    logits2, _ = small.forward(p1, segs[1], carry)
    long = np.concatenate([segs[0]["decoder_input_tokens"], segs[1]["decoder_input_tokens"]], 1)
    ref_logits = []
    for row in range(long.shape[0]):
        _, lg = xl_reference.forward(p1, small.config, long[row],
                                     see_h=lambda i, j: j <= i and (i < 8 or j >= 4))
        ref_logits.append(lg[8:])
    np.testing.assert_allclose(np.asarray(logits2), np.stack(ref_logits), rtol=2e-4, atol=2e-4)


def test_causal_logits_equal_slow_reference(tiny):
    cfg, model, params = tiny
    batch = causal_lm.single_protein_rows(SEQS, 12)
    logits = np.asarray(model.logits(params, batch))
    for row in range(len(SEQS)):
        _, ref = xl_reference.forward(params, cfg, batch["decoder_input_tokens"][row],
                                      see_h=lambda i, j: j <= i)
        np.testing.assert_allclose(logits[row], ref, rtol=2e-4, atol=2e-4)


def test_same_length_mask_shows_mem_len_keys():
    tokens = np.ones((1, 6), np.int32)
    mask = np.asarray(txl.causal_mask(tokens, np.array([4]), 4, same_length=True))[0, 0]
    assert mask.sum(-1).tolist() == [4] * 6           # every query: exactly mem_len keys
    plain = np.asarray(txl.causal_mask(tokens, np.array([2]), 4))[0, 0]
    assert plain[:, :2].sum() == 0                     # unfilled memory slots hidden
    assert plain.sum(-1).tolist() == [3, 4, 5, 6, 7, 8]


def test_padding_does_not_change_residue_vectors(tiny):
    cfg, model, params = tiny
    ids, offset = M.get_family(cfg).tokenize(SEQS[0])
    assert offset == 1 and ids[0] == tok.PROTTXL_EOS_ID
    padded = np.concatenate([ids, np.zeros(7, np.int32)])
    a = np.asarray(model.encode(params, ids[None]))[0]
    b = np.asarray(model.encode(params, padded[None]))[0, :len(ids)]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_stream_rows_are_the_objective():
    rows = causal_lm.single_protein_rows(["MK", "AC"], 5)
    eos = tok.PROTTXL_EOS_ID
    m, k, a, c = (tok.PROTTXL_TOKENS.index(x) for x in "MKAC")
    assert rows["decoder_input_tokens"][0].tolist() == [eos, m, k, eos, a]
    assert rows["decoder_target_tokens"][0].tolist() == [m, k, eos, a, c]
    assert rows["decoder_input_tokens"][1].tolist() == [eos, a, c, eos, m]
    assert rows["decoder_loss_weights"].min() == 1
