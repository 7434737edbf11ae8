"""ProtXLNet: two-stream outputs vs a slow reference, the permutation masks, padding."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protlm.models as M
from protlm.data import plm
from protlm.data import tokens as tok
from protlm.data.streams import ProteinStreams
from protlm.models import xlnet
from tests.models import xl_reference
from tests.models.conftest import key, perturbed

SEQS = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGG",
        "MAXUKLLLLAAAGGGQQQWWERTY", "MKVLLAGHHHHHHDEFGIKLMNPQRSTVWY"]


def _tiny(**over):
    cfg = M.get_config("prot_xlnet_tiny", dropout_rate=0.0, attention_dropout_rate=0.0, **over)
    model = M.get_model(cfg)
    batch = _batch(cfg)
    params = nn.meta.unbox(jax.jit(model.init)(key(0), batch)["params"])
    return cfg, model, perturbed(params)


@pytest.fixture(scope="module")
def tiny():
    cfg, model, params = _tiny()
    return cfg, model, params, jax.jit(model.logits)


def _batch(cfg, length=24, seed=3, bi_data=True):
    pcfg = plm.PLMConfig(seq_len=length, reuse_len=cfg.reuse_len, perm_size=4, num_predict=6,
                         bi_data=bi_data)
    rows = plm.bi_data_rows(len(SEQS), bi_data)
    streams = ProteinStreams(iter(SEQS * 50), len(SEQS), tok.encode_protxlnet,
                             tok.PROTXLNET_EOD_ID, rows)
    return plm.stream_batch(streams, 0, pcfg, seed, 0, rows)


def _see(batch, row):
    tokens, perm, part = (jnp.asarray(batch[k][row:row + 1]) for k in
                          ("input_tokens", "perm_index", "perm_part"))
    mask_h, mask_g = xlnet.permutation_masks(tokens, perm, part,
                                             jnp.ones(tokens.shape, bool), 0)
    return np.asarray(mask_h[0, 0]), np.asarray(mask_g[0, 0])


def test_two_stream_outputs_equal_slow_reference(tiny):
    cfg, model, params, logits_fn = tiny
    batch = _batch(cfg)
    logits = np.asarray(logits_fn(params, batch))               # [b, P, vocab]
    assert batch["reverse"][:, 0].tolist() == [0, 0, 1, 1]
    for row in range(len(SEQS)):
        see_h, see_g = _see(batch, row)
        n = int(batch["target_weights"][row].sum())
        targets = [int(t) for t in batch["target_positions"][row, :n]]
        _, ref_logits = xl_reference.forward(
            params, cfg, batch["input_tokens"][row], see_h=lambda i, j: see_h[i, j],
            see_g=lambda i, j: see_g[i, j], targets=targets, seg_ids=batch["seg_ids"][row],
            reverse=bool(batch["reverse"][row, 0]))
        np.testing.assert_allclose(logits[row, :n], ref_logits, rtol=2e-4, atol=2e-4)
    # the content stream (what embed returns) too, without permutation: everything visible
    emb = np.asarray(model.encode(params, batch["input_tokens"][:1],
                                  segment_ids=batch["seg_ids"][:1]))
    ref_h, _ = xl_reference.forward(params, cfg, batch["input_tokens"][0],
                                    see_h=lambda i, j: True, seg_ids=batch["seg_ids"][0])
    np.testing.assert_allclose(emb[0], ref_h, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("seed", range(4))
def test_query_stream_never_sees_its_own_content(tiny, seed):
    cfg, model, params, logits_fn = tiny
    batch = _batch(cfg, seed=seed)
    for row in range(len(SEQS)):
        see_h, see_g = _see(batch, row)
        n = int(batch["target_weights"][row].sum())
        assert n > 0
        for t in batch["target_positions"][row, :n]:
            assert not see_g[t, t], "a target's query stream attends to its own position"
            assert see_h[t, t], "the content stream always sees itself"
        # no target i reaches its own content through any chain of content states
        reach = see_h.copy()
        for _ in range(cfg.num_layers + 2):   # transitive closure over the layers
            reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
        for t in batch["target_positions"][row, :n]:
            assert not (see_g[t] & reach[:, t]).any(), "content of a target leaks to its query"
    # empirically: changing a target's own token never moves its prediction (one variant of
    # the batch per predicted slot, all run at once)
    logits = np.asarray(logits_fn(params, batch))
    w_id, a_id = tok.PROTXLNET_TOKENS.index("W"), tok.PROTXLNET_TOKENS.index("A")
    for m in range(batch["target_tokens"].shape[1]):
        changed = {k: v.copy() for k, v in batch.items()}
        rows = np.arange(len(SEQS))
        pos = batch["target_positions"][:, m]
        old = changed["input_tokens"][rows, pos]
        changed["input_tokens"][rows, pos] = np.where(old == w_id, a_id, w_id)
        moved = np.asarray(logits_fn(params, changed))
        real = batch["target_weights"][:, m] > 0
        np.testing.assert_array_equal(moved[real, m], logits[real, m])


def _original_perm_mask(inputs, is_masked, index, reuse):
    """zihangdai/xlnet `_local_perm` + the parser's concatenation, transcribed (1 = cannot see)."""
    def local(inp, masked, idx):
        non_func = ~((inp == tok.PROTXLNET_SEP_ID) | (inp == tok.PROTXLNET_CLS_ID))
        non_mask = ~masked & non_func
        rev = np.where(non_mask, -1, idx)
        target = ~non_mask & non_func
        self_rev = np.where(target, rev, rev + 1)
        return (self_rev[:, None] <= rev[None, :]) & ~non_mask[None, :]
    q = len(inputs)
    m0 = local(inputs[:reuse], is_masked[:reuse], index[:reuse])
    m1 = local(inputs[reuse:], is_masked[reuse:], index[reuse:])
    top = np.concatenate([m0, np.ones((reuse, q - reuse), bool)], 1)
    bottom = np.concatenate([np.zeros((q - reuse, reuse), bool), m1], 1)
    return np.concatenate([top, bottom], 0)


def test_masks_equal_xlnet_original_formula():
    rng = np.random.default_rng(0)
    for trial in range(20):
        cfg = plm.PLMConfig(seq_len=16, reuse_len=8, perm_size=4, num_predict=5)
        inputs = rng.integers(17, 37, size=16)
        inputs[[9, 14]] = tok.PROTXLNET_SEP_ID
        inputs[15] = tok.PROTXLNET_CLS_ID
        is_masked = rng.random(16) < 0.35
        perm = np.concatenate([plm.local_perm(inputs[:8], is_masked[:8], 4, np.random.default_rng(trial)),
                               plm.local_perm(inputs[8:], is_masked[8:], 4, np.random.default_rng(trial + 99))])
        # recover the raw permutation index the ranks came from (ranks of visible tokens are -1)
        index = np.where(perm >= 0, perm, 0)
        want = _original_perm_mask(inputs, is_masked, index, 8)
        part = (np.arange(16) >= 8).astype(np.int32)
        _, see = xlnet.permutation_masks(jnp.asarray(inputs[None]), jnp.asarray(perm[None]),
                                         jnp.asarray(part[None]), jnp.ones((1, 16), bool), 0)
        np.testing.assert_array_equal(~np.asarray(see[0, 0]), want)
        del cfg


def test_padding_does_not_change_residue_vectors(tiny):
    cfg, model, params, _ = tiny
    family = M.get_family(cfg)
    ids, _ = family.tokenize(SEQS[0])
    padded = np.concatenate([ids, np.full(5, tok.PROTXLNET_PAD_ID, np.int32)])
    a = np.asarray(model.encode(params, ids[None]))[0]
    b = np.asarray(model.encode(params, padded[None]))[0, :len(ids)]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_tokenize_is_prottrans_layout():
    family = M.get_family(M.get_config("prot_xlnet_tiny"))
    ids, offset = family.tokenize("MKUX")
    assert offset == 0
    assert tok.protxlnet_id_to_piece(ids) == ["M", "K", "<unk>", "<unk>", "<sep>", "<cls>"]
    assert family.pad_id == tok.PROTXLNET_PAD_ID == 5


def test_xlnet_config_rejects_heads_that_do_not_make_d_model():
    with pytest.raises(ValueError, match="num_heads"):
        M.get_config("prot_xlnet_tiny", head_dim=16)
