import numpy as np
import pytest

from protlm.downstream import datasets


def test_flip_split_sizes_and_masks(data_root):
    flip = datasets.load_flip(data_root)
    assert {k: len(v) for k, v in flip.items()} == {"train": 9712, "validation": 1080, "NEW364": 364}
    masked = sum(int((~r.mask).sum()) for r in flip["NEW364"])
    assert masked == 9139  # SOURCES.md: masked residues in the test split
    r = flip["train"][0]
    assert r.id == "1es5-A" and len(r.sequence) == len(r.labels) == len(r.mask)
    assert not r.mask[0] and r.mask[2]  # mask.fasta starts "0011..."
    assert set(np.unique(np.concatenate([r.labels for r in flip["train"][:50]]))) <= {0, 1, 2}


def test_ss_csv_dedup_and_disorder_mask(data_root):
    cb = datasets.load_ss_csv(data_root, "CB513", 8)
    assert len(cb) == 432  # 511 rows, 432 distinct sequences
    casp = datasets.load_ss_csv(data_root, "CASP12", 3)
    assert len(casp) == 20
    first = casp[0]
    assert not first.mask[:23].any() and first.mask[23]  # unresolved N-terminus excluded
    assert datasets.load_ss_csv(data_root, "TS115", 8)[0].labels.max() < 8


def test_deeploc_splits(data_root):
    dl = datasets.load_deeploc(data_root)
    assert len(dl["train"]) == 9176 and len(dl["test"]) == 2768
    assert len(dl["validation"]) == 1678 - 23  # Cytoplasm-Nucleus dropped
    assert {r.membrane for r in dl["test"]} == {"M", "S", "U"}
    assert sum(r.membrane == "M" for r in dl["test"]) == 743


def test_task_sequences_unique_ids(data_root):
    items = datasets.task_sequences("localization", data_root)
    assert len(items) == 9176 + 1655 + 2768
    assert len({i for i, _ in items}) == len(items)


def test_malformed_files_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">P1 Nucleus-S\nMKT\n>P2 Nowhere-S\nMKV\n")
    with pytest.raises(datasets.DataFormatError, match=r"bad.fasta:3: unknown location 'Nowhere'"):
        datasets.read_deeploc_fasta(bad)
    bad.write_text("MKT\n>P1 Nucleus-S\n")
    with pytest.raises(datasets.DataFormatError, match=r"bad.fasta:1: sequence line before"):
        datasets.read_deeploc_fasta(bad)


def test_write_fasta_roundtrip(tmp_path):
    path = tmp_path / "x.fasta"
    datasets.write_fasta([("a", "M" * 130), ("b", "KV")], path)
    got = [(h, s) for h, s, _ in datasets.read_labelled_fasta(path)]
    assert got == [("a", "M" * 130), ("b", "KV")]


def test_subsample_spreads_over_the_list():
    assert datasets.subsample(list(range(100)), 5) == [0, 25, 50, 74, 99]
    assert datasets.subsample([1, 2], 5) == [1, 2]
