"""End-to-end smoke runs of `python -m protlm.downstream` on small real subsets."""
import json

import h5py
import numpy as np

from protlm.downstream import datasets, encodings, main


def test_write_fasta(tmp_path, data_root):
    out = tmp_path / "ss.fasta"
    assert main.main(["--task", "secondary_structure", "--write_fasta", str(out), "--data_root", str(data_root)]) == 0
    ids = [h for h, _, _ in datasets.read_labelled_fasta(out)]
    assert len(ids) == len(set(ids)) == 9712 + 1080 + 364 + 432 + 115 + 20


def test_localization_from_embeddings_h5(tmp_path, data_root):
    # An h5 in protlm.embed's layout: per-residue BLOSUM62 "embeddings" for a subset.
    h5 = tmp_path / "loc.h5"
    splits = datasets.load_deeploc(data_root)
    with h5py.File(h5, "w") as f:
        f.attrs.update(model="blosum-as-h5", layer=-1, dtype="float32")
        for recs in splits.values():
            for r in datasets.subsample(recs, 120):
                f.create_dataset(r.id, data=encodings.blosum62(r.sequence).astype(np.float16))
    out = tmp_path / "loc" / "results.json"
    rc = main.main(["--task", "localization", "--embeddings", str(h5), "--output", str(out),
                    "--data_root", str(data_root), "--limit", "120", "--max_epochs", "5"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["name"] == "blosum-as-h5" and res["features"]["kind"] == "embeddings"
    assert res["q10"]["DeepLoc"]["n_proteins"] == 120
    assert 0 < res["q2"]["DeepLoc"]["n_proteins"] < 120  # only M/S-labelled proteins
    for m in (res["q10"]["DeepLoc"], res["q2"]["DeepLoc"]):
        assert 0 <= m["ci_low"] <= m["value"] <= m["ci_high"] <= 100
    md = out.with_suffix(".md").read_text()
    assert "| Q10 | DeepLoc |" in md
    for png in ("tsne_localization.png", "confusion_q10.png", "confusion_q2.png"):
        assert (out.parent / "plots" / png).stat().st_size > 1000


def test_secondary_structure_baseline(tmp_path, data_root):
    out = tmp_path / "ss" / "results.json"
    results = main.evaluate("secondary_structure", encoding="onehot", data_root=data_root, output=out,
                            limit=15, max_epochs=2)
    assert set(results["q3"]) == {"CASP12", "TS115", "CB513", "NEW364"}
    assert set(results["q8"]) == {"CASP12", "TS115", "CB513"}
    assert results["q8"]["CB513"]["protocol"] == "5-fold cross-validation"
    for m in list(results["q3"].values()) + list(results["q8"].values()):
        assert 20 < m["value"] < 90 and m["n_scored"] > 0
    assert json.loads(out.read_text())["q3"]["CB513"]["value"] == results["q3"]["CB513"]["value"]
    assert (out.parent / "plots" / "confusion_q8_CB513.png").exists()
    assert np.array(results["confusion"]["q3_CB513"]).sum() == results["q3"]["CB513"]["n_scored"]
