"""protlm.embed on 20 real DeepLoc proteins with tiny random models (ProtT5 encoder and ProtBert)."""
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm import embed, models
from protlm.data.fasta import FastaFormatError
from protlm.data.tokens import PROTBERT_CLS_ID, PROTBERT_SEP_ID, PROTT5_EOS_ID, encode_protbert, encode_prott5
from protlm.downstream import datasets


def _init(name):
    cfg = models.get_config(name)
    model = models.get_model(cfg)
    shapes = {k: jnp.zeros((1, 8), jnp.int32) for k in
              ("encoder_input_tokens", "decoder_input_tokens", "encoder_target_tokens")}
    variables = model.init(jax.random.PRNGKey(0), shapes)
    return cfg, model, variables["params"]


@pytest.fixture(scope="module")
def t5():
    cfg, model, params = _init("prot_t5_tiny")
    return cfg, model, params, embed.prepare_model(params, cfg)


@pytest.fixture(scope="module")
def proteins(data_root):
    """20 real DeepLoc test proteins, spread over the file; one id with '.' and '/' to sanitise."""
    recs = datasets.subsample(datasets.load_deeploc(data_root)["test"], 20)
    items = [(r.id, r.sequence) for r in recs]
    items[3] = ("sp|" + items[3][0] + ".1/x", items[3][1])
    return items


def _fasta(path, items):
    datasets.write_fasta(items, path)
    return path


def _own_forward(model, params, family, seq):
    """The model's own forward on one unpadded protein, residues only: [L, d]."""
    if family == "t5":
        tokens = np.concatenate([encode_prott5(seq), [PROTT5_EOS_ID]])
        return np.asarray(model.encode(nn_unbox(params), tokens[None]))[0, : len(seq)]
    tokens = np.concatenate([[PROTBERT_CLS_ID], encode_protbert(seq), [PROTBERT_SEP_ID]])
    return np.asarray(model.encode(nn_unbox(params), tokens[None]))[0, 1 : len(seq) + 1]


def nn_unbox(params):
    import flax.linen as nn

    return nn.unbox(params)


def test_t5_shapes_ids_mean_and_own_forward(tmp_path, t5, proteins):
    cfg, model, params, loaded = t5
    fasta = _fasta(tmp_path / "p.fasta", proteins)
    stats = embed.embed_fasta("tiny-t5", fasta, tmp_path / "e.h5", per_residue=True, per_protein=True,
                              max_tokens_per_batch=2048, progress=False, loaded=loaded)
    assert stats["proteins"] == 20 and stats["residues"] == sum(len(s) for _, s in proteins)
    assert stats["residues_per_s"] > 0
    res = h5py.File(tmp_path / "e.per_residue.h5", "r")
    prot = h5py.File(tmp_path / "e.per_protein.h5", "r")
    assert set(res) == set(prot) == {embed.sanitize_id(i) for i, _ in proteins}
    assert "sp|" + proteins[3][0][3:].replace(".", "_").replace("/", "_") in res
    assert res.attrs["model"] == "tiny-t5" and res.attrs["layer"] == -1 and res.attrs["dtype"] == "float32"
    assert res.attrs["representation"] == "per_residue" and prot.attrs["representation"] == "per_protein"
    for pid, seq in proteins:
        key = embed.sanitize_id(pid)
        r = res[key][()]
        assert r.shape == (len(seq), cfg.emb_dim) and r.dtype == np.float32  # EOS position dropped
        assert prot[key].shape == (cfg.emb_dim,)
        np.testing.assert_allclose(prot[key][()], r.mean(0), rtol=1e-5, atol=1e-5)
    for pid, seq in proteins[:4]:  # padding/batching does not change the result
        np.testing.assert_allclose(res[embed.sanitize_id(pid)][()], _own_forward(model, params, "t5", seq),
                                   rtol=1e-4, atol=1e-4)
    assert not (tmp_path / "e.per_residue.h5.partial").exists()


def test_resume_skips_present_ids_and_keeps_them(tmp_path, t5, proteins, monkeypatch):
    *_, loaded = t5
    out = tmp_path / "r.h5"
    fasta = _fasta(tmp_path / "all.fasta", proteins)
    # An interrupted run (it stops after its second batch) leaves OUT.partial with what it wrote.
    real, calls = embed.embed_batches, []

    def interrupted(*a, **k):
        for i, item in enumerate(real(*a, **k)):
            if i == 2:
                raise KeyboardInterrupt
            calls.append(len(item[0]))
            yield item

    monkeypatch.setattr(embed, "embed_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed.embed_fasta("tiny-t5", fasta, out, per_residue=False, per_protein=True, progress=False,
                          loaded=loaded, max_tokens_per_batch=256)
    monkeypatch.setattr(embed, "embed_batches", real)
    assert not out.exists() and not out.with_name("r.h5.lock").exists()
    with h5py.File(out.with_name("r.h5.partial"), "r") as f:
        before = {k: f[k][()] for k in f}
    assert len(before) == sum(calls) > 0
    second = embed.embed_fasta("tiny-t5", fasta, out, per_residue=False, per_protein=True, progress=False,
                               loaded=loaded, max_tokens_per_batch=256)
    assert second["skipped"] == len(before) and second["proteins"] == 20 - len(before)
    with h5py.File(out, "r") as f:
        assert len(f) == 20
        for k, v in before.items():
            np.testing.assert_array_equal(f[k][()], v)
    third = embed.embed_fasta("tiny-t5", fasta, out, per_residue=False, per_protein=True,
                              progress=False, loaded=loaded)
    assert third["proteins"] == 0 and third["skipped"] == 20
    with pytest.raises(embed.EmbedInputError, match="layer=-1, this run has layer=1"):
        embed.embed_fasta("tiny-t5", fasta, out, per_residue=False, per_protein=True,
                          layer=1, progress=False, loaded=loaded)


def test_float16_dtype_and_intermediate_layer(tmp_path, t5, proteins):
    cfg, model, params, _ = t5
    fasta = _fasta(tmp_path / "p.fasta", proteins[:5])
    half = embed.prepare_model(params, cfg, "float16")
    embed.embed_fasta("tiny-t5", fasta, tmp_path / "h.h5", progress=False, loaded=half)
    full = embed.embed_fasta("tiny-t5", fasta, tmp_path / "f.h5", progress=False, loaded=t5[3])
    assert full["proteins"] == 5
    with h5py.File(tmp_path / "h.h5", "r") as h, h5py.File(tmp_path / "f.h5", "r") as f:
        assert h.attrs["dtype"] == "float16"
        for k in f:
            assert h[k].dtype == np.float16
            np.testing.assert_allclose(h[k][()].astype(np.float32), f[k][()], atol=0.05, rtol=0.05)
    embed.embed_fasta("tiny-t5", fasta, tmp_path / "l0.h5", layer=0, progress=False, loaded=t5[3])
    pid, seq = proteins[0]
    tokens = np.concatenate([encode_prott5(seq), [PROTT5_EOS_ID]])[None]
    _, hidden = model.encode(nn_unbox(params), tokens, output_hidden_states=True)
    with h5py.File(tmp_path / "l0.h5", "r") as f:
        assert f.attrs["layer"] == 0
        np.testing.assert_allclose(f[embed.sanitize_id(pid)][()], np.asarray(hidden[0])[0, : len(seq)], atol=1e-5)
    with pytest.raises(ValueError, match="--layer 5 out of range"):
        embed.embed_fasta("tiny-t5", fasta, tmp_path / "bad.h5", layer=5, progress=False, loaded=t5[3])


def test_protbert_drops_cls_and_sep(tmp_path, proteins):
    cfg, model, params = _init("prot_bert_tiny")
    short = [(i, s[:300]) for i, s in proteins[:6]]  # prot_bert_tiny has 512 positions
    loaded = embed.prepare_model(params, cfg)
    embed.embed_fasta("tiny-bert", _fasta(tmp_path / "b.fasta", short), tmp_path / "b.h5", progress=False,
                      loaded=loaded)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f.attrs["family"] == "bert"
        for pid, seq in short[:3]:
            np.testing.assert_allclose(f[embed.sanitize_id(pid)][()], _own_forward(model, params, "bert", seq),
                                       rtol=1e-4, atol=1e-4)
    too_long = _fasta(tmp_path / "long.fasta", [("L1", "M" * 600)])
    with pytest.raises(embed.EmbedInputError, match=r"long.fasta:1: record 'L1' has 600 residues.*at most 510"):
        embed.embed_fasta("tiny-bert", too_long, tmp_path / "l.h5", progress=False, loaded=loaded)


@pytest.mark.parametrize("content, match", [
    ("", "no FASTA records"),
    (">a\nMKT\n>b\nMKV\n>a\nMKL\n", r"dup.fasta:5: duplicate id \(first at line 1\)"),
    (">a\nMK1T\n", "digit '1'"),
])
def test_bad_input_fails_before_loading_the_model(tmp_path, content, match):
    path = tmp_path / "dup.fasta"
    path.write_text(content)
    # The model path does not exist: the FASTA error must come first.
    with pytest.raises((FastaFormatError, embed.EmbedInputError), match=match):
        embed.embed_fasta(tmp_path / "no_model", path, tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.partial").exists()


def test_plan_batches_bounds_shapes_and_isolates_long_proteins():
    lengths = [50, 60, 700, 5200, 130, 131, 1000, 40] + [100] * 37
    plan = embed.plan_batches(lengths, 1024)
    assert sorted(i for _, _, idx in plan for i in idx) == list(range(len(lengths)))
    assert plan[0] == (embed.bucket_for(5200), 1, [3])  # the 5,200-residue protein alone, longest first
    assert 5200 <= plan[0][0] <= 5200 * 1.25
    for k, (length, rows, idx) in enumerate(plan):
        assert length in embed.BUCKETS and all(lengths[i] <= length for i in idx)
        assert length == embed.bucket_for(max(lengths[i] for i in idx))  # padded to its longest
        full = max(1, 1024 // length)
        assert len(idx) <= rows <= full
        if k < len(plan) - 1:
            assert len(idx) == rows == full  # only the last batch is partial
        assert rows == full or rows & (rows - 1) == 0  # a partial batch is padded to a power of two
    flat = [lengths[i] for _, _, idx in plan for i in idx]
    assert flat == sorted(lengths, reverse=True)  # consecutive in length order
    assert embed.bucket_for(600, max_tokens=512) == 512


def test_buckets_are_fine_geometric_and_bounded():
    b = embed.BUCKETS
    assert list(b) == sorted(set(b)) and b[-1] == 32768 and len(b) <= 44
    assert all(x % 16 == 0 for x in b)
    for lo, hi in zip(b, b[1:]):  # x1.1 (+ rounding) where proteins are common, x1.25 above
        assert hi / lo <= (1.1 + 64 / lo if hi <= 2048 else 1.25 + 1024 / lo) + 1e-9
    for n in (1, 33, 100, 257, 1000, 2049, 8193, 32768):
        assert embed.bucket_for(n) >= n and embed.bucket_for(n) in b


def test_long_proteins_use_fine_steps_above_the_largest_bucket():
    assert embed.bucket_for(34351) == 34816  # titin (34,350 residues + </s>), not 65,536
    for n in (32769, 40000, 70001):
        assert embed.bucket_for(n) % embed.LONG_STEP == 0 and 0 <= embed.bucket_for(n) - n < embed.LONG_STEP
    assert embed.bucket_for(34351, max_tokens=40000) == 34816


def test_padding_is_close_to_sorted_batches_on_a_realistic_length_distribution():
    """A DeepLoc-like length distribution (log-normal, median ~430, long tail to 5,600)."""
    rng = np.random.default_rng(0)
    lengths = [int(x) + 1 for x in np.clip(rng.lognormal(np.log(430), 0.75, 2768), 20, 5654)]
    st = embed.padding_stats(lengths, 8192)
    assert st["padded_tokens_per_token"] < 1.12, st  # DeepLoc test with the old buckets: 1.34
    assert st["shapes"] <= 40 and st["shapes"] <= len({embed.bucket_for(n) for n in lengths}) + 1
    small = embed.padding_stats(lengths[:200], 8192)
    assert small["padded_tokens_per_token"] < 1.25 and small["shapes"] <= 25


def test_forward_is_memoised_and_long_batches_switch_to_blocked_attention(t5, proteins):
    cfg, model, params, loaded = t5
    f1 = embed.make_forward(loaded, -1, True, False, blocked_attention_from=0)
    f2 = embed.make_forward(embed.prepare_model(params, cfg), -1, True, False, blocked_attention_from=0)
    assert f1 is f2  # one jit per (config, layer, representation): compiled shapes are reused
    assert embed.make_forward(loaded, 0, True, False, blocked_attention_from=0) is not f1
    seq = proteins[0][1][:150]
    tokens = np.zeros((1, 160), np.int32)
    tokens[0, : len(seq) + 1] = np.concatenate([encode_prott5(seq), [PROTT5_EOS_ID]])
    mask = np.zeros((1, 160), bool)
    mask[0, : len(seq)] = True
    blocked = embed.make_forward(loaded, -1, True, True, blocked_attention_from=128)
    dense = embed.make_forward(loaded, -1, True, True, blocked_attention_from=0)
    hb, mb = blocked(loaded.params, tokens, mask)
    hd, md = dense(loaded.params, tokens, mask)
    np.testing.assert_allclose(np.asarray(hb)[0, : len(seq)], np.asarray(hd)[0, : len(seq)], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(mb), np.asarray(md), rtol=1e-4, atol=1e-4)


def test_cli_compilation_cache_dir(tmp_path, t5, proteins, monkeypatch):
    calls = []
    monkeypatch.setattr(embed, "enable_compilation_cache", calls.append)
    monkeypatch.setattr(embed, "embed_fasta", lambda *a, **k: calls.append(k) or {})
    assert embed.main(["--model", "m", "--fasta", "f.fasta", "--compilation_cache_dir", str(tmp_path / "c"),
                       "--blocked_attention_from", "4096", "--no_progress"]) == 0
    assert calls[0] == str(tmp_path / "c") and calls[1]["blocked_attention_from"] == 4096


def test_cli_with_saved_checkpoint(tmp_path, t5, proteins):
    """The real path: save_params -> `python -m protlm.embed --model DIR` (load_params inside)."""
    from protlm import checkpoints

    cfg, _, params, loaded = t5
    checkpoints.save_params(tmp_path / "model", nn_unbox(params), cfg)
    fasta = _fasta(tmp_path / "p.fasta", proteins[:5])
    rc = embed.main(["--model", str(tmp_path / "model"), "--fasta", str(fasta), "--output",
                     str(tmp_path / "cli.h5"), "--per_protein", "--no_progress"])
    assert rc == 0
    ref = embed.embed_fasta("x", fasta, tmp_path / "ref.h5", per_residue=False, per_protein=True, progress=False,
                            loaded=loaded)
    assert ref["proteins"] == 5
    with h5py.File(tmp_path / "cli.h5", "r") as a, h5py.File(tmp_path / "ref.h5", "r") as b:
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_allclose(a[k][()], b[k][()], atol=1e-6)


def test_hf_directory_matches_transformers(tmp_path, t5, proteins):
    """`--model HF_DIR` (imported in-process) gives transformers' T5EncoderModel output, EOS dropped."""
    import torch
    import transformers
    from protlm.hf import export

    cfg, _, params, _ = t5
    hf_dir = export.export_params(params, cfg, tmp_path / "hf", part="encoder", progress=False)
    fasta = _fasta(tmp_path / "p.fasta", proteins[:3])
    assert embed.main(["--model", str(hf_dir), "--fasta", str(fasta), "--output", str(tmp_path / "hf.h5"),
                       "--no_progress"]) == 0
    ref_model = transformers.T5EncoderModel.from_pretrained(hf_dir).eval()
    with h5py.File(tmp_path / "hf.h5", "r") as f, torch.no_grad():
        for pid, seq in proteins[:3]:
            ids = torch.tensor(np.concatenate([encode_prott5(seq), [PROTT5_EOS_ID]])[None], dtype=torch.long)
            ref = ref_model(input_ids=ids).last_hidden_state[0, : len(seq)].numpy()
            np.testing.assert_allclose(f[embed.sanitize_id(pid)][()], ref, rtol=1e-4, atol=1e-4)


def test_embed_and_downstream_import_without_tensorflow():
    """The GPU machine has no TensorFlow / seqio: embed and the probes must not import them."""
    import subprocess
    import sys

    code = ("import sys, protlm.embed, protlm.downstream.main; "
            "bad = [m for m in ('tensorflow', 'seqio') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
