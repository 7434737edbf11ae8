"""ProtElectra <-> transformers: both halves export to `ElectraForPreTraining` /
`ElectraForMaskedLM` and compute what protlm computes (random init and after training, real
proteins), import back bit-identically, full-size names, shapes and counts equal transformers'
(meta device), transformers-made checkpoints import, and an exported discriminator loaded with
AutoTokenizer + AutoModel gives protlm.embed's embeddings."""
from __future__ import annotations

import dataclasses
import functools

import h5py
import jax
import numpy as np
import pytest

from protlm import embed, models
from protlm.downstream import datasets
from protlm.hf import export, importer, spec
from protlm.hf.tokenizers import hf_input_text
from protlm.hf.weights_reader import HFWeights

from .conftest import init_params, pad, token_rows, train

import torch
import transformers

pytestmark = pytest.mark.hf
TOL = 1e-4
PARTS = ("discriminator", "generator")
# transformers 5 on the meta device (PROTTRANS_FACTS section 1; the paper pair: this repo's sizes).
EXPECTED = {("prot_electra_discriminator_bfd", "discriminator"): 682_562_561,
            ("prot_electra_discriminator_bfd", "generator"): 682_563_870,
            ("prot_electra_generator_bfd", "generator"): 682_563_870,
            ("prot_electra", "discriminator"): 419_932_161,
            ("prot_electra", "generator"): 65_215_262}


@functools.lru_cache(maxsize=None)
def _params(name: str, trained: bool, seqs: tuple[str, ...], **overrides):
    config = models.get_config(name, dtype="float32", **overrides)
    params = init_params(config)
    if trained:
        params = train(config, params, list(seqs))
    return config, params


def _forward(config, params, part, tokens):
    """protlm's (last hidden state, logits) of one network on whole proteins."""
    model = models.get_model(dataclasses.replace(config, encoder_part=part))
    return (np.asarray(model.encode(params, tokens)),
            np.asarray(model.apply_network(f"{part}_logits", params, tokens)))


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", [("prot_electra_tiny", ()),
                                            ("prot_electra_tiny", (("embedding_size", 16),)),
                                            ("prot_electra_small", ())],
                         ids=["tiny", "tiny_disc_projection", "small"])
def test_both_parts_match_transformers_and_round_trip(name, overrides, proteins, tmp_path):
    tokens = pad(token_rows(models.get_config(name), proteins))
    mask = tokens > 0
    # Trained (20 steps) for the tiny presets; the small pair from its random init (layout at a
    # realistic width; training it doubles the test for nothing the tiny cases miss).
    for trained in (False, True) if name == "prot_electra_tiny" else (False,):
        config, params = _params(name, trained, tuple(proteins), **dict(overrides))
        for part in PARTS:
            out = export.export_params(params, config, tmp_path / f"{trained}_{part}", part=part,
                                       progress=False)
            cls = getattr(transformers, models.get_family(config).hf().classes[part])
            hf, info = cls.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
            assert not any(info.values()), info
            tok = transformers.AutoTokenizer.from_pretrained(out)
            enc = tok([hf_input_text(s) for s in proteins], padding=True, return_tensors="pt")
            np.testing.assert_array_equal(enc.input_ids.numpy(), tokens)
            with torch.no_grad():
                ref = hf.eval()(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                                output_hidden_states=True)
            hidden, logits = _forward(config, params, part, tokens)
            hd = np.abs(hidden - ref.hidden_states[-1].numpy())[mask].max()
            ld = np.abs(logits - ref.logits.numpy())[mask].max()
            print(f"{name}{dict(overrides)} {part} trained={trained}: hidden {hd:.2e} logits {ld:.2e}")
            assert hd <= TOL and ld <= TOL
            back, back_config = importer.params_from_hf(out, dtype="float32")
            assert back_config.encoder_part == part
            assert back_config.tower_config(part) == config.tower_config(part)
            want = models.get_family(config).hf().select(params, part)
            flat = dict(jax.tree_util.tree_leaves_with_path(back))
            assert set(flat) == {p for p, _ in jax.tree_util.tree_leaves_with_path(want)}
            for path, leaf in jax.tree_util.tree_leaves_with_path(want):
                np.testing.assert_array_equal(flat[path], leaf, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("name,part", sorted(EXPECTED))
def test_full_size_names_shapes_and_counts_equal_transformers(name, part):
    config = models.get_config(name)
    specs = export.hf_tensor_specs(config, spec.param_shapes(config, part), part)
    ours = {s.name: tuple(s.shape) for s in specs}
    cls = getattr(transformers, models.get_family(config).hf().classes[part])
    with torch.device("meta"):
        model = cls(spec.transformers_config(config, part))
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in tied}
    assert ours == theirs
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[(name, part)]
    assert config.param_counts()[cls.__name__] == EXPECTED[(name, part)]


def test_summary_prints_both_counts():
    import subprocess
    import sys
    for name in ("prot_electra_discriminator_bfd", "prot_electra_generator_bfd"):
        out = subprocess.run([sys.executable, "-m", "protlm.models.summary", "--model", name],
                             capture_output=True, text=True, check=True, timeout=300).stdout
        assert "as ElectraForPreTraining: 682,562,561" in out, out[-500:]
        assert "as ElectraForMaskedLM: 682,563,870" in out
        assert "parameters:        1,313,882,911" in out


def _hf_electra(part: str, seed: int, **overrides):
    torch.manual_seed(seed)
    cfg = transformers.ElectraConfig(vocab_size=30, embedding_size=16, hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=128,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     **overrides)
    cls = transformers.ElectraForPreTraining if part == "discriminator" else \
        transformers.ElectraForMaskedLM
    model = cls(cfg)
    with torch.no_grad():   # non-trivial norms and biases, so a swapped mapping cannot pass
        for n, p in model.named_parameters():
            if "LayerNorm" in n or n.endswith("bias"):
                p.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("part", PARTS)
def test_transformers_checkpoints_import_and_reexport_identically(part, proteins, tmp_path):
    model = _hf_electra(part, seed=1)
    model.save_pretrained(tmp_path / "src")
    params, config = importer.params_from_hf(tmp_path / "src", dtype="float32")
    assert config.encoder_part == part
    assert set(params) == {"embeddings", f"{part}_projection", f"{part}_encoder", f"{part}_head"}
    out = export.export_params(params, config, tmp_path / "dst", progress=False)
    a, b = HFWeights(str(tmp_path / "src")), HFWeights(str(out))
    assert sorted(a.keys()) == b.keys()
    for k in a.keys():
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    tokens = pad(token_rows(config, proteins[:6]))
    with torch.no_grad():
        ids = torch.as_tensor(tokens, dtype=torch.long)
        ref = model(input_ids=ids, attention_mask=(ids > 0).long()).logits.numpy()
    ours = np.asarray(models.get_model(config).apply_network(f"{part}_logits", params, tokens))
    assert np.abs(ours - ref)[tokens > 0].max() <= TOL
    # Rostlab layout: pytorch_model.bin with the tied decoder copy and the position-id buffer.
    (tmp_path / "bin").mkdir()
    model.config.to_json_file(str(tmp_path / "bin" / "config.json"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["electra.embeddings.position_ids"] = torch.arange(128)[None]
    if part == "generator":
        state["generator_lm_head.weight"] = state["electra.embeddings.word_embeddings.weight"]
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    again, _ = importer.params_from_hf(tmp_path / "bin", dtype="float32")
    for x, y in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(x, y)


def test_exporting_a_part_the_params_lack_fails(tmp_path):
    model = _hf_electra("discriminator", seed=2)
    model.save_pretrained(tmp_path / "src")
    params, config = importer.params_from_hf(tmp_path / "src")
    with pytest.raises(ValueError, match="generator_encoder"):
        export.export_params(params, config, tmp_path / "out", part="generator", progress=False)


@pytest.mark.slow
def test_auto_model_of_exported_discriminator_matches_embed(data_root, tmp_path):
    """AutoTokenizer + AutoModel (ElectraModel) of an exported, briefly trained discriminator give
    protlm.embed's per-residue embeddings ([CLS]/[SEP] dropped) on 12 real DeepLoc proteins."""
    recs = datasets.subsample(datasets.load_deeploc(data_root)["test"], 12)
    seqs = [r.sequence[:300] for r in recs]
    config, params = _params("prot_electra_tiny", True, tuple(seqs))
    out = export.export_params(params, config, tmp_path / "hf", progress=False)
    fasta = tmp_path / "p.fasta"
    datasets.write_fasta([(f"p{i}", s) for i, s in enumerate(seqs)], fasta)
    loaded = embed.prepare_model(params, config)
    embed.embed_fasta("electra", fasta, tmp_path / "e.h5", progress=False, loaded=loaded)
    embed.embed_fasta(out, fasta, tmp_path / "from_hf.h5", progress=False)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModel.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == "ElectraModel"
    worst = 0.0
    with h5py.File(tmp_path / "e.h5", "r") as ours, h5py.File(tmp_path / "from_hf.h5", "r") as hf:
        for i, s in enumerate(seqs):
            batch = tok(hf_input_text(s), return_tensors="pt")
            with torch.no_grad():
                ref = model(**batch).last_hidden_state[0, 1:-1].numpy()
            assert ours[f"p{i}"].shape == ref.shape == (len(s), config.hidden_size)
            worst = max(worst, float(np.abs(ours[f"p{i}"][()] - ref).max()),
                        float(np.abs(hf[f"p{i}"][()] - ref).max()))
    print(f"AutoModel vs protlm.embed: max |diff| {worst:.2e}")
    assert worst <= TOL
