"""tools/shard_fasta.py, tools/show_examples.py and tools/bench_data.py."""
import gzip
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from protlm.data import splits
from protlm.data.fasta import FastaFormatError, read_fasta

TOOLS = pathlib.Path(__file__).resolve().parents[2] / "tools"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shard_tool = _load("shard_fasta")


def _records(n, dup_every=0):
    out = []
    for i in range(n):
        seq = "MKTAYIAKQRQISFVKSHFSRQ"[: 5 + i % 15] + "LG" * (i % 7)
        if dup_every and i % dup_every == 0 and i:
            seq = out[0][1]
        out.append((f"rec{i}", seq))
    return out


def _write_fasta(path, recs):
    path.write_text("".join(f">{i} some description\n{s.lower() if n % 3 == 0 else s}\n" for n, (i, s) in enumerate(recs)))
    return str(path)


def test_shard_split_dedup_exclusion(tmp_path):
    recs = [(f"r{i}", "M" + "ACDEFGHIKLMNPQRSTVWY"[i % 20] * (3 + i % 11) + "K" * (i // 20)) for i in range(600)]
    recs.append(("dup_of_r1", recs[1][1]))
    recs.append(("dup_of_r2", recs[2][1]))
    src = _write_fasta(tmp_path / "in.fasta", recs)
    ex_fasta = tmp_path / "test_set.fasta"
    ex_fasta.write_text(f">t1\n{recs[5][1]}\n")
    ex_csv = tmp_path / "cb513.csv"
    ex_csv.write_text("input, dssp3, dssp8\n" + " ".join(recs[7][1]) + ",C C,C C\n")
    out = tmp_path / "out"
    report = shard_tool.shard_fasta([src], str(out), num_shards=4, validation_fraction=0.1, dedup=True,
                                    exclude=[str(ex_fasta), str(ex_csv)], progress=False)
    assert report["records_read"] == 602
    assert report["duplicates_removed"] == 2
    assert report["excluded_removed"] == 2
    assert report["train"]["records"] + report["validation"]["records"] == 598
    train = list(read_fasta(str(out / "train-*-of-00004.fasta.gz")))
    val = list(read_fasta(str(out / "validation-*.fasta.gz")))
    assert all(not splits.is_validation(r.id, 0.1) for r in train)
    assert all(splits.is_validation(r.id, 0.1) for r in val)
    assert 30 <= len(val) <= 90  # ~10 %
    ids = {r.id for r in train + val}
    assert "r5" not in ids and "r7" not in ids and "dup_of_r1" not in ids and "r1" in ids
    seqs = [r.sequence for r in train + val]
    assert len(seqs) == len(set(seqs))
    for r in train:
        assert r.path.endswith(f"train-{splits.shard_of(r.id, 4):05d}-of-00004.fasta.gz")
    assert json.loads((out / "shard_report.json").read_text())["train"]["records"] == len(train)
    # Deterministic: same input, same bytes (gzip mtime aside: compare decompressed text).
    out2 = tmp_path / "out2"
    shard_tool.shard_fasta([src], str(out2), num_shards=4, validation_fraction=0.1, dedup=True,
                           exclude=[str(ex_fasta), str(ex_csv)], progress=False)
    for p in out.glob("*.fasta.gz"):
        assert gzip.decompress(p.read_bytes()) == gzip.decompress((out2 / p.name).read_bytes())


def test_shard_atomic_on_error(tmp_path):
    src = tmp_path / "in.fasta"
    src.write_text(">a\nMKT\n" * 50 + ">bad\nMK-T\n")
    out = tmp_path / "out"
    with pytest.raises(FastaFormatError, match="alignment gap"):
        shard_tool.shard_fasta([str(src)], str(out), num_shards=2, progress=False)
    assert list(out.iterdir()) == []  # nothing half-written, no temporaries left


def test_shard_cli_and_empty_shards(tmp_path, capsys):
    src = _write_fasta(tmp_path / "in.fasta", _records(3))
    shard_tool.main(["--input", src, "--output_dir", str(tmp_path / "o"), "--num_shards", "16", "--no_progress"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["records_read"] == 3
    assert len(summary["train"]["empty_shards_not_written"]) >= 13
    with pytest.raises(SystemExit, match="matches no file"):
        shard_tool.main(["--input", str(tmp_path / "none*.fa"), "--output_dir", str(tmp_path / "o2"), "--num_shards", "2"])


def test_shard_real_corpus_excluding_netsurfp(tmp_path, data_root, pretraining_fasta):
    """The shared corpus was filtered against CB513: excluding it removes nothing; a planted copy is removed."""
    cb513 = data_root / "secondary_structure/netsurfp2_prottrans_csv/CB513_HHblits.csv"
    first = next(iter(shard_tool._csv_sequences(str(cb513), "input")))
    src = tmp_path / "mix.fasta"
    recs = []
    for rec in read_fasta(pretraining_fasta[0]):
        recs.append((rec.id, rec.sequence))
        if len(recs) == 300:
            break
    recs.append(("planted_cb513", "".join(first.split())))
    _write_fasta(src, recs)
    report = shard_tool.shard_fasta([str(src)], str(tmp_path / "o"), 2, exclude=[str(cb513)], progress=False)
    assert report["excluded_removed"] == 1
    assert report["train"]["records"] + report["validation"]["records"] == 300


def test_show_examples_json(small_tasks):
    show = _load("show_examples")
    exs = show.examples("prott5_span_denoising", small_tasks, num=3, seed=4, lengths={"inputs": 40, "targets": 40})
    assert len(exs) == 3
    for ex in exs:
        assert len(ex["source_sequence"]) == 39
        assert ex["targets"] == list(ex["source_sequence"]) + ["</s>"]
        assert ex["inputs"][-1] == "</s>"
        sentinels = [t for t in ex["inputs"] if t.startswith("<extra_id_")]
        assert sentinels == [f"<extra_id_{i}>" for i in range(6)]  # round(0.15 * 39)
    mlm = show.examples("protbert_mlm", small_tasks, num=2, seed=4, lengths={"inputs": 40})
    assert mlm[0]["inputs"][0] == "[CLS]" and mlm[0]["targets"][-1] == "[SEP]" and sum(mlm[0]["loss_weights"]) == 6
    json.dumps(exs)


@pytest.mark.slow
def test_show_examples_and_bench_cli(small_corpus):
    out = subprocess.run([sys.executable, str(TOOLS / "show_examples.py"), "--task", "prott5_span_corruption",
                          "--fasta_pattern", small_corpus, "--num", "2", "--seed", "1", "--json",
                          "--inputs_length", "64", "--targets_length", "24"],
                         capture_output=True, text=True, check=True, timeout=300)
    lines = [json.loads(x) for x in out.stdout.strip().splitlines()]
    assert len(lines) == 2 and lines[0]["targets"][0] == "<extra_id_0>"
    bench = subprocess.run([sys.executable, str(TOOLS / "bench_data.py"), "--fasta_pattern", small_corpus,
                            "--batches", "3", "--warmup_batches", "1", "--batch_size", "4", "--length", "128",
                            "--shuffle_buffer_size", "16"],
                           capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(bench.stdout)
    assert set(result["tasks"]) == {"prott5_span_denoising", "prott5_span_corruption", "protbert_mlm"}
    assert all(v["residues_per_s"] > 0 for v in result["tasks"].values())
