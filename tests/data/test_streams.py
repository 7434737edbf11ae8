"""Parallel protein streams: rows continue across steps, proteins stay whole, exact resume,
host shares, the XLNet example layout and its span masks."""
import gzip

import numpy as np
import pytest

from protlm.data import causal_lm, plm, splits
from protlm.data import tokens as tok
from protlm.data.stream_sources import CausalLMStreamSource, PermutationLMStreamSource
from protlm.data.streams import ProteinStreams, StreamExhausted, ProteinRecords

RESIDUES = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    """Two files of 60 random proteins (lengths 5..60), ids chosen so some are held out."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("fasta")
    records = []
    for f in range(2):
        with gzip.open(root / f"part{f}.fasta.gz", "wt") as out:
            for i in range(60):
                seq = "".join(rng.choice(RESIDUES, size=int(rng.integers(5, 61))))
                records.append((f"p{f}_{i}", seq))
                out.write(f">p{f}_{i}\n{seq}\n")
    return str(root / "part*.fasta.gz"), dict(records)


def _row_tokens(batches, key="decoder_input_tokens"):
    return np.concatenate([b[key] for b in batches], axis=1)


def test_txl_rows_continue_and_hold_whole_proteins(fasta):
    pattern, records = fasta
    source = CausalLMStreamSource({"inputs": 16}, fasta_pattern=pattern, validation_fraction=0.2)
    it = source("train", 4, 0, 1, True)
    batches = [next(it) for _ in range(12)]
    for a, b in zip(batches, batches[1:]):   # row i of step t+1 continues row i of step t
        np.testing.assert_array_equal(b["decoder_input_tokens"][:, 0], a["decoder_target_tokens"][:, -1])
        np.testing.assert_array_equal(a["decoder_input_tokens"][:, 1:], a["decoder_target_tokens"][:, :-1])
    train = {tuple(tok.encode_prottxl(s)) for i, s in records.items()
             if splits.split_of(i, 0.2) == "train"}
    seen = set()
    for row in _row_tokens(batches):
        parts = np.split(row, np.flatnonzero(row == tok.PROTTXL_EOS_ID) + 1)
        for piece in parts[1:-1]:               # whole proteins between separators
            protein = tuple(piece[:-1])
            assert protein in train, "a row holds a cut, mixed or held-out protein"
            seen.add(protein)
    assert len(seen) > 10


def test_restored_position_continues_the_uninterrupted_stream(fasta, tmp_path):
    pattern, _ = fasta
    steps = 140      # > 1 epoch of the two files: the saved positions cross files and epochs
    for source in (CausalLMStreamSource({"inputs": 16}, fasta_pattern=pattern),
                   PermutationLMStreamSource({"inputs": 24}, fasta_pattern=pattern, reuse_len=12,
                                             perm_size=6, num_predict=4, bi_data=True)):
        full = source("train", 4, 0, 1, True)
        batches, positions = [], {}
        for t in range(steps):
            if t in (1, 50, 125):
                where = tmp_path / f"{type(source).__name__}_{t}"
                where.mkdir()
                full.save(str(where))
                positions[t] = where
            batches.append(next(full))
        assert full._records.position["epoch"] >= 1, "the test must cross epochs"
        for start, where in positions.items():
            resumed = source("train", 4, 0, 1, True)
            resumed.restore(str(where), start)
            assert resumed.batches_consumed == start
            for t in range(start, min(start + 8, steps)):
                got = next(resumed)
                for k in batches[t]:
                    np.testing.assert_array_equal(got[k], batches[t][k], err_msg=f"{k} step {t}")


def test_hosts_read_disjoint_shares(fasta):
    pattern, _ = fasta
    a = list(_take(ProteinRecords(pattern, shard_index=0, num_shards=2, repeat=False)))
    b = list(_take(ProteinRecords(pattern, shard_index=1, num_shards=2, repeat=False)))
    assert a and b and not set(a) & set(b)
    three = [set(_take(ProteinRecords(pattern, shard_index=i, num_shards=3, repeat=False)))
             for i in range(3)]                  # fewer files than hosts: by record
    assert sum(map(len, three)) == len(set.union(*three)) == len(a) + len(b)


def _take(it, n=10_000):
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def test_validation_split_is_the_hash_held_out_part(fasta):
    pattern, records = fasta
    val = set(ProteinRecords(pattern, "validation", validation_fraction=0.2, repeat=False))
    train = set(ProteinRecords(pattern, "train", validation_fraction=0.2, repeat=False))
    assert val == {s for i, s in records.items() if splits.split_of(i, 0.2) == "validation"}
    assert val and not val & train


def test_one_pass_stream_ends_cleanly(fasta):
    pattern, _ = fasta
    streams = ProteinStreams(iter(["MK"]), 1, tok.encode_prottxl, tok.PROTTXL_EOS_ID)
    with pytest.raises(StreamExhausted):
        streams.window(0, 0, 10)
    with pytest.raises(ValueError, match="shard_index"):
        next(ProteinRecords(pattern, shard_index=2, num_shards=2))


def test_xlnet_example_layout(fasta):
    pattern, _ = fasta
    cfg = plm.PLMConfig(seq_len=32, reuse_len=16, perm_size=8, num_predict=6, bi_data=True)
    source = PermutationLMStreamSource({"inputs": 32}, fasta_pattern=pattern, reuse_len=16,
                                       perm_size=8, num_predict=6)
    it = source("train", 4, 0, 1, True)
    b0, b1 = next(it), next(it)
    assert b0["reverse"][:, 0].tolist() == [0, 0, 1, 1]
    for row in range(4):
        ids, seg = b0["input_tokens"][row], b0["seg_ids"][row]
        assert ids[-1] == tok.PROTXLNET_CLS_ID and seg[-1] == 2
        seps = np.flatnonzero(ids == tok.PROTXLNET_SEP_ID)
        assert seps[-1] == 30 and seg[seps[-1]] == 1 and seg[seps[0]] == 0
        assert (seg[:cfg.reuse_len] == 0).all()
        n = b0["target_weights"][row].sum()
        assert 0 < n <= cfg.num_predict
        pos = b0["target_positions"][row, :n]
        np.testing.assert_array_equal(b0["target_tokens"][row, :n], ids[pos])
        assert (b0["perm_index"][row, pos] >= 0).all()
        assert b0["perm_part"][row].tolist() == [0] * 16 + [1] * 16
        # step 1's reused part continues the row after step 0's: it starts with step 0's A
        a_len = min(int(seps[0]) - cfg.reuse_len, cfg.reuse_len)
        np.testing.assert_array_equal(b1["input_tokens"][row, :a_len],
                                      ids[cfg.reuse_len:cfg.reuse_len + a_len])


def test_sample_mask_counts_spans_and_contexts():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = plm.sample_mask(64, 10, rng, 6, 1)
        assert mask.sum() == 10
    rev = plm.sample_mask(64, 10, np.random.default_rng(5), 6, 1, reverse=True)
    fwd = plm.sample_mask(64, 10, np.random.default_rng(5), 6, 1)
    np.testing.assert_array_equal(rev, fwd[::-1])
    # spans: most masked tokens come in runs (n-grams of 1..5), separated by context
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], fwd.astype(int), [0]]))))[::2]
    assert runs.max() <= 5


def test_local_perm_ranks_only_masked_and_functional_tokens():
    inputs = np.array([20, 21, 22, tok.PROTXLNET_SEP_ID, 23, 24, 25, tok.PROTXLNET_CLS_ID])
    masked = np.array([1, 0, 1, 0, 0, 0, 1, 0], bool)
    rank = plm.local_perm(inputs, masked, 4, np.random.default_rng(0))
    assert ((rank >= 0) == (masked | np.isin(inputs, [3, 4]))).all()
    # blocks of perm_size share one permutation: ranks of block 2 = block 1's + 4
    index = np.arange(8).reshape(-1, 4).T[np.random.default_rng(0).permutation(4)].T.reshape(-1)
    np.testing.assert_array_equal(rank[rank >= 0], index[rank >= 0])
    assert sorted(index[:4]) == [0, 1, 2, 3] and (index[4:] == index[:4] + 4).all()


def test_txl_stream_batch_and_advance_agree():
    seqs = iter(["MKTAYIAK", "QRQISF", "VKSHFSRQLEERLG"] * 20)
    a = ProteinStreams(seqs, 2, tok.encode_prottxl, tok.PROTTXL_EOS_ID)
    seqs2 = iter(["MKTAYIAK", "QRQISF", "VKSHFSRQLEERLG"] * 20)
    b = ProteinStreams(seqs2, 2, tok.encode_prottxl, tok.PROTTXL_EOS_ID)
    causal_lm.stream_batch(a, 0, 5)
    causal_lm.advance(b, 0, 5)
    x, y = causal_lm.stream_batch(a, 1, 5), causal_lm.stream_batch(b, 1, 5)
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])
