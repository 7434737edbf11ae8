"""protlm.embed with ProtElectra: the discriminator by default ([CLS]/[SEP] dropped), the generator
for encoder_part='generator', from a saved checkpoint, on real DeepLoc proteins."""
import dataclasses

import h5py
import jax
import numpy as np
import pytest

from protlm import checkpoints, embed, models
from protlm.data.tokens import PROTBERT_CLS_ID, PROTBERT_SEP_ID, encode_protbert
from protlm.downstream import datasets


@pytest.fixture(scope="module")
def electra_tiny():
    cfg = models.get_config("prot_electra_tiny")
    family = models.get_family(cfg)
    shapes = family.batch_shapes(cfg, family.default_lengths(8), 1, pack=False)
    params = models.get_model(cfg).init(jax.random.PRNGKey(0), shapes)["params"]
    return cfg, embed.prepare_model(params, cfg).params


@pytest.fixture(scope="module")
def proteins(data_root):
    recs = datasets.subsample(datasets.load_deeploc(data_root)["test"], 8)
    return [(r.id, r.sequence[:300]) for r in recs]   # prot_electra_tiny has 512 positions


@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_embeds_the_encoder_part_without_specials(tmp_path, electra_tiny, proteins, part):
    cfg, params = electra_tiny
    cfg = dataclasses.replace(cfg, encoder_part=part)
    model = models.get_model(cfg)
    loaded = embed.prepare_model(params, cfg)
    fasta = tmp_path / "p.fasta"
    datasets.write_fasta(proteins, fasta)
    model_dir = tmp_path / "run"
    checkpoints.save_params(model_dir, params, cfg)
    embed.embed_fasta(model_dir, fasta, tmp_path / "e.h5", per_protein=True, progress=False)
    dim = cfg.discriminator_hidden_size if part == "discriminator" else cfg.generator_hidden_size
    with h5py.File(tmp_path / "e.per_residue.h5", "r") as res, \
            h5py.File(tmp_path / "e.per_protein.h5", "r") as prot:
        assert res.attrs["family"] == "electra"
        for pid, seq in proteins:
            key = embed.sanitize_id(pid)
            tokens = np.concatenate([[PROTBERT_CLS_ID], encode_protbert(seq), [PROTBERT_SEP_ID]])
            own = np.asarray(model.encode(loaded.params, tokens[None]))[0, 1:-1]
            assert res[key].shape == (len(seq), dim)
            np.testing.assert_allclose(res[key][()], own, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(prot[key][()], own.mean(0), rtol=1e-4, atol=1e-4)
