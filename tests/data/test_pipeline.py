"""open_stream: keys, packing, determinism, sharding, save/restore, validation split."""
import itertools

import numpy as np
import pytest
import seqio
import tensorflow as tf

from protlm.data import feature_converters as fc
from protlm.data import splits
from protlm.data import tokens as tok
from protlm.data.fasta import read_fasta
from protlm.data.pipeline import get_batch_iterator, open_stream

T5_KEYS = {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"}
T5_PACK = {"encoder_segment_ids", "encoder_positions", "decoder_segment_ids", "decoder_positions"}
BERT_KEYS = {"encoder_input_tokens", "encoder_target_tokens", "encoder_loss_weights"}
BERT_PACK = {"encoder_segment_ids", "encoder_positions"}
L = 64


def _take(it, n):
    return list(itertools.islice(it, n))


@pytest.mark.parametrize("task,lengths,keys,pack_keys", [
    ("prott5_span_denoising", {"inputs": L, "targets": L}, T5_KEYS, T5_PACK),
    ("prott5_span_corruption", {"inputs": L, "targets": 24}, T5_KEYS, T5_PACK),
    ("protbert_mlm", {"inputs": L}, BERT_KEYS, BERT_PACK),
])
@pytest.mark.parametrize("pack", [True, False])
def test_batch_keys_and_shapes(small_tasks, task, lengths, keys, pack_keys, pack):
    batch = next(get_batch_iterator(task, lengths, 4, seed=0, pack=pack))
    assert set(batch) == (keys | pack_keys if pack else keys)
    for k, v in batch.items():
        assert v.dtype == np.int32 and v.shape[0] == 4
        assert v.shape[1] == (lengths.get("targets", L) if k.startswith("decoder") else L)


def test_t5_packing_consistent(small_tasks):
    n = 256  # long enough that short proteins get packed together
    batches = _take(get_batch_iterator("prott5_span_denoising", {"inputs": n, "targets": n}, 8, seed=3), 3)
    assert any((b["decoder_segment_ids"].max(axis=1) > 1).any() for b in batches)  # something was packed
    for b in batches:
        seg, tgt, inp = b["decoder_segment_ids"], b["decoder_target_tokens"], b["encoder_input_tokens"]
        np.testing.assert_array_equal(b["encoder_segment_ids"], seg)  # same lengths on both sides
        np.testing.assert_array_equal(b["decoder_loss_weights"], (tgt > 0).astype(np.int32))
        # every packed segment ends in EOS on both sides; residues agree off the sentinels
        for row in range(8):
            for s in range(1, seg[row].max() + 1):
                t, i = tgt[row][seg[row] == s], inp[row][seg[row] == s]
                assert t[-1] == 1 and i[-1] == 1 and len(t) <= n
                keep = i < tok.PROTT5_LAST_SENTINEL_ID
                np.testing.assert_array_equal(i[keep], t[keep])
                assert (i[~keep] == 127 - np.arange((~keep).sum())).all()
        # decoder inputs are targets shifted right within each segment
        pos = b["decoder_positions"]
        din = b["decoder_input_tokens"]
        assert (din[pos == 0] == 0).all()


def test_mlm_packing_keeps_all_loss_weights(small_tasks):
    packed = _take(get_batch_iterator("protbert_mlm", {"inputs": 256}, 8, seed=5, pack=True), 8)
    assert any((b["encoder_segment_ids"].max(axis=1) > 1).any() for b in packed)
    for b in packed:
        w, inp, tgt, seg = b["encoder_loss_weights"], b["encoder_input_tokens"], b["encoder_target_tokens"], b["encoder_segment_ids"]
        assert ((inp != tgt) <= (w == 1)).all()  # every changed position is weighted
        assert ((inp == tok.PROTBERT_MASK_ID) <= (w == 1)).all()
        assert (w[seg == 0] == 0).all()
        assert (w[(inp == tok.PROTBERT_CLS_ID) | (inp == tok.PROTBERT_SEP_ID)] == 0).all()
        # unchanged-but-selected positions exist over a few batches: seqio's mask-id rule would miss them
    unchanged_selected = sum(((b["encoder_loss_weights"] == 1) & (b["encoder_input_tokens"] == b["encoder_target_tokens"])).sum()
                             for b in packed)
    assert unchanged_selected > 0
    frac = sum(b["encoder_loss_weights"].sum() for b in packed) / sum(
        (b["encoder_target_tokens"] >= 5).sum() for b in packed)
    assert 0.12 < frac < 0.18


def test_mlm_converter_direct():
    ds = tf.data.Dataset.from_tensor_slices({
        "inputs": [[2, 4, 6, 7, 3], [2, 8, 9, 4, 3]],
        "targets": [[2, 5, 6, 7, 3], [2, 8, 10, 11, 3]],
        "loss_weights": [[0, 1, 0, 1, 0], [0, 0, 1, 1, 0]],
    })
    out = list(fc.MLMFeatureConverter(pack=True)(ds, {"inputs": 12}).as_numpy_iterator())
    assert len(out) == 1
    np.testing.assert_array_equal(out[0]["encoder_loss_weights"], [0, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out[0]["encoder_segment_ids"], [1] * 5 + [2] * 5 + [0, 0])
    np.testing.assert_array_equal(out[0]["encoder_positions"], list(range(5)) * 2 + [0, 0])
    unpacked = list(fc.MLMFeatureConverter(pack=False)(ds, {"inputs": 6}).as_numpy_iterator())
    np.testing.assert_array_equal(unpacked[1]["encoder_loss_weights"], [0, 0, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="aligned"):
        fc.MLMFeatureConverter(pack=False)(ds, {"inputs": 6, "targets": 7})


def test_converter_choice(small_tasks):
    assert isinstance(fc.get_feature_converter("protbert_mlm"), fc.MLMFeatureConverter)
    assert isinstance(fc.get_feature_converter("prott5_span_denoising_uniref50"), seqio.EncDecFeatureConverter)


def test_determinism_seed_and_restore(small_tasks, tmp_path):
    args = ("prott5_span_denoising", {"inputs": L, "targets": L}, 4)
    a = _take(get_batch_iterator(*args, seed=11), 6)
    b = _take(get_batch_iterator(*args, seed=11), 6)
    c = _take(get_batch_iterator(*args, seed=12), 6)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any((x["encoder_input_tokens"] != y["encoder_input_tokens"]).any() for x, y in zip(a, c))
    stream = open_stream(*args, seed=11)
    _take(stream, 4)
    stream.save(str(tmp_path))
    resumed = open_stream(*args, seed=11)
    resumed.restore(str(tmp_path))
    for x, y in zip(a[4:], _take(resumed, 2)):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    other = open_stream("protbert_mlm", {"inputs": L}, 4, seed=11)
    with pytest.raises(ValueError, match="cannot be restored"):
        other.restore(str(tmp_path))
    with pytest.raises(ValueError, match="no tf.data iterator state"):
        other.restore(str(tmp_path / "nothing_here"))


def _ids_of(task, small_corpus, **kw):
    """Source record ids a non-repeating pass yields (via the task's extra 'id' feature)."""
    task_obj = seqio.get_mixture_or_task(task)
    info = seqio.ShardInfo(kw.pop("shard_index"), kw.pop("num_shards")) if "num_shards" in kw else None
    ds = task_obj.get_dataset(sequence_length={"inputs": L, "targets": L}, shard_info=info, num_epochs=1, **kw)
    return [ex["id"].decode() for ex in ds.as_numpy_iterator()]


@pytest.fixture(scope="module")
def four_shard_dir(small_corpus, tmp_path_factory):
    """A 4-file shard directory of the small corpus."""
    from protlm.data import shard_pipeline

    out = tmp_path_factory.mktemp("four") / "shards"
    shard_pipeline.run(shard_pipeline.ShardConfig(inputs=(small_corpus,), output_dir=str(out), num_shards=4))
    return str(out)


@pytest.fixture()
def four_shard_tasks(four_shard_dir):
    from protlm.data.tasks import register_tasks

    register_tasks(fasta_pattern=four_shard_dir, shuffle_buffer_size=64)
    yield four_shard_dir
    register_tasks()


@pytest.mark.parametrize("num_shards", [2, 8])  # 2: by file (4 shard files), 8: by record
def test_shards_disjoint_and_complete(four_shard_tasks, num_shards):
    parts = [_ids_of("prott5_span_denoising", four_shard_tasks, split="train", seed=0, shard_index=i, num_shards=num_shards)
             for i in range(num_shards)]
    flat = [x for p in parts for x in p]
    assert len(flat) == len(set(flat))
    everything = _ids_of("prott5_span_denoising", four_shard_tasks, split="train", seed=0)
    assert sorted(flat) == sorted(everything)
    b0 = next(get_batch_iterator("protbert_mlm", {"inputs": L}, 4, seed=0, shard_index=0, num_shards=num_shards))
    b1 = next(get_batch_iterator("protbert_mlm", {"inputs": L}, 4, seed=0, shard_index=1, num_shards=num_shards))
    assert (b0["encoder_target_tokens"] != b1["encoder_target_tokens"]).any()


def test_validation_split_by_id_hash(small_tasks):
    all_ids = [r.id for r in read_fasta(small_tasks)]
    train = _ids_of("protbert_mlm", small_tasks, split="train", shuffle=False, seed=0)
    val = _ids_of("protbert_mlm", small_tasks, split="validation", shuffle=False, seed=0)
    assert set(val) == {i for i in all_ids if splits.is_validation(i)}
    assert set(train) | set(val) == set(all_ids) and not set(train) & set(val)


def test_separate_validation_pattern_and_finite_eval(small_corpus, tmp_path):
    from protlm.data.tasks import register_tasks

    vpath = tmp_path / "val.fasta"
    vpath.write_text(">v1\n" + "MKTAYIAKQR" * 5 + "\n>v2\nLLGVV\n>v3\nWWCC\n")
    register_tasks(fasta_pattern=small_corpus, validation_fasta_pattern=str(vpath), shuffle_buffer_size=16)
    try:
        batches = list(get_batch_iterator("prott5_span_denoising", {"inputs": 32, "targets": 32}, 2,
                                          split="validation", pack=False, repeat=False))
        assert len(batches) == 2  # 3 examples -> 2 batches, the last padded with a zero row
        assert (batches[1]["encoder_input_tokens"][1] == 0).all()
        assert (batches[1]["decoder_loss_weights"][1] == 0).all()
        assert tok.decode_prott5(batches[0]["decoder_target_tokens"][1]) == "LLGVV"
    finally:
        register_tasks()


def test_env_variant_without_pattern_errors(small_tasks, monkeypatch):
    monkeypatch.delenv("PROTLM_BFD", raising=False)
    with pytest.raises(ValueError, match=r"\$PROTLM_BFD"):
        next(get_batch_iterator("protbert_mlm_bfd", {"inputs": L}, 2))


def test_env_variant_reads_env(small_tasks, monkeypatch):
    monkeypatch.setenv("PROTLM_UNIREF50", small_tasks)
    batch = next(get_batch_iterator("prott5_span_denoising_uniref50", {"inputs": L, "targets": L}, 2))
    assert batch["encoder_input_tokens"].shape == (2, L)


def test_bad_fasta_surfaces_clear_error(tmp_path):
    from protlm.data.tasks import register_tasks

    (tmp_path / "bad.fasta").write_text(">p1\nMKT\n>p2\nMK-TA\n")
    register_tasks(fasta_pattern=str(tmp_path / "bad.fasta"), shuffle_buffer_size=4)
    try:
        with pytest.raises(Exception, match=r"bad\.fasta:4: alignment gap"):
            list(get_batch_iterator("protbert_mlm", {"inputs": 16}, 1, repeat=False))
    finally:
        register_tasks()
