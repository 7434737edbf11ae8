"""protlm.embed for ProtAlbert on real DeepLoc proteins: [CLS]/[SEP] dropped as Rostlab's
notebooks do, and a trained-then-exported quickstart-size ALBERT read by `AutoTokenizer` +
`AutoModel` gives protlm.embed's vectors (<= 1e-4)."""
import h5py
import numpy as np
import pytest

from protlm import embed, partitioning
from protlm.data import tokens
from protlm.hf import tokenizers
from tests.test_embed import _fasta, proteins  # noqa: F401  (fixture: 20 real DeepLoc proteins)
from tests.trainer import helpers

# gin/quickstart_albert.gin's model: factorised 64 -> 128, one shared layer x 4, 40,000 positions.
QUICKSTART = dict(embedding_size=64, hidden_size=128, num_heads=4, intermediate_size=512,
                  num_layers=4, dtype="float32")


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """A protlm MODEL_DIR: the quickstart-size ALBERT after 4 trainer steps (LAMB)."""
    model_dir = tmp_path_factory.mktemp("albert_run")
    out = helpers.run(model_dir, "prot_albert_small", steps=4, batch_size=8,
                      partition=partitioning.PartitionConfig(num_devices=1), **QUICKSTART)
    assert out["status"] == "done"
    return model_dir


def test_per_residue_drops_cls_sep_and_per_protein_is_the_mean(tmp_path, quickstart_run, proteins):
    loaded = embed.load_model(quickstart_run)
    assert loaded.family.name == "albert" and loaded.dim == 128 and loaded.max_tokens == 40000
    fasta = _fasta(tmp_path / "p.fasta", proteins)
    stats = embed.embed_fasta(str(quickstart_run), fasta, tmp_path / "e.h5", per_residue=True,
                              per_protein=True, progress=False, loaded=loaded)
    assert stats["proteins"] == 20
    with h5py.File(tmp_path / "e.per_residue.h5", "r") as res, \
            h5py.File(tmp_path / "e.per_protein.h5", "r") as prot:
        assert res.attrs["family"] == "albert"
        for pid, seq in proteins:
            r = res[embed.sanitize_id(pid)][()]
            assert r.shape == (len(seq), 128)
            np.testing.assert_allclose(prot[embed.sanitize_id(pid)][()], r.mean(0), rtol=1e-5,
                                       atol=1e-5)
        for pid, seq in proteins[:3]:   # batching and padding change nothing
            ids = np.concatenate([[tokens.PROTALBERT_CLS_ID], tokens.encode_protalbert(seq),
                                  [tokens.PROTALBERT_SEP_ID]])[None]
            own = np.asarray(loaded.model.encode(loaded.params, ids))[0, 1:len(seq) + 1]
            np.testing.assert_allclose(res[embed.sanitize_id(pid)][()], own, rtol=1e-4, atol=1e-4)


@pytest.mark.hf
def test_exported_quickstart_albert_auto_classes_match_embed(tmp_path, quickstart_run, proteins):
    """Acceptance: export_hf -> AutoTokenizer + AutoModel (AlbertModel) -> last_hidden_state
    without [CLS]/[SEP] == protlm.embed of the protlm checkpoint, and == protlm.embed of the
    exported directory itself (imported in-process)."""
    import torch
    import transformers
    from protlm import export_hf  # noqa: PLC0415

    hf_dir = tmp_path / "hf"
    assert export_hf.main(["--checkpoint_dir", str(quickstart_run), "--output_dir", str(hf_dir)]) == 0
    picked = proteins[:8]
    fasta = _fasta(tmp_path / "p.fasta", picked)
    for source, out in ((quickstart_run, "protlm.h5"), (hf_dir, "hf.h5")):
        assert embed.main(["--model", str(source), "--fasta", str(fasta), "--output",
                           str(tmp_path / out), "--no_progress"]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.AutoModel.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert type(model).__name__ == "AlbertModel"
    worst = 0.0
    with h5py.File(tmp_path / "protlm.h5", "r") as ours, h5py.File(tmp_path / "hf.h5", "r") as imp:
        for pid, seq in picked:
            enc = tok(tokenizers.hf_input_text(seq), return_tensors="pt")
            with torch.no_grad():
                ref = model(**enc).last_hidden_state[0, 1:-1].numpy()   # Rostlab: drop [CLS]/[SEP]
            key = embed.sanitize_id(pid)
            assert ref.shape == ours[key].shape == (len(seq), 128)
            worst = max(worst, float(np.abs(ours[key][()] - ref).max()))
            np.testing.assert_array_equal(imp[key][()], ours[key][()])
    print(f"AutoModel vs protlm.embed, 8 DeepLoc proteins: max |diff| {worst:.2e}")
    assert worst <= 1e-4
