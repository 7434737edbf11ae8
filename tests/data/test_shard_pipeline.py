"""The Beam sharding pipeline (local runner): split rule, dedup, exclusion, atomic output, read-back."""
import itertools
import json

import numpy as np
import pytest

from protlm.data import shard_pipeline, shards, splits
from protlm.data.exclusions import ExclusionFormatError, evaluation_sequences
from protlm.data.fasta import FastaFormatError, read_fasta


def _write_fasta(path, recs):
    path.write_text("".join(f">{i} some description\n{s.lower() if n % 3 == 0 else s}\n"
                            for n, (i, s) in enumerate(recs)))
    return str(path)


def _config(inputs, out, **kw):
    return shard_pipeline.ShardConfig(inputs=tuple(inputs), output_dir=str(out), **kw)


def _records(directory, split):
    return list(shards.read_records(shards.split_files(str(directory), split)))


def test_split_dedup_exclusion_small(tmp_path):
    recs = [(f"r{i}", "M" + "ACDEFGHIKLMNPQRSTVWY"[i % 20] * (3 + i % 11) + "K" * (i // 20)) for i in range(600)]
    recs += [("dup_of_r1", recs[1][1]), ("dup_of_r2", recs[2][1])]
    src = _write_fasta(tmp_path / "in.fasta", recs)
    (tmp_path / "test_set.fasta").write_text(f">t1\n{recs[5][1]}\n")
    (tmp_path / "cb513.csv").write_text("input, dssp3, dssp8\n" + " ".join(recs[7][1]) + ",C C,C C\n")
    (tmp_path / "hits.m8").write_text("r9\tt1\t0.95\t10\nr10\tt2\t42.0\t10\nr11\tt3\t0.20\t10\n")
    out = tmp_path / "out"
    config = _config([src], out, num_shards=4, validation_fraction=0.1, dedup=True,
                     exclude=(str(tmp_path / "test_set.fasta"), str(tmp_path / "cb513.csv")),
                     exclude_hits=(str(tmp_path / "hits.m8"),), exclude_min_identity=0.3)
    report = shard_pipeline.run(config)
    assert report["records_read"] == 602
    assert report["duplicates_removed"] == 2 and report["excluded_removed"] == 2
    assert report["excluded_by_identity"] == 2          # r9 (95 %) and r10 (42 %), not r11 (20 %)
    train, val = _records(out, "train"), _records(out, "validation")
    assert report["train"]["records"] == len(train) and report["validation"]["records"] == len(val)
    assert len(train) + len(val) == 596
    assert all(not splits.is_validation(i, 0.1) for i, _ in train)
    assert all(splits.is_validation(i, 0.1) for i, _ in val) and 30 <= len(val) <= 90
    ids = {i for i, _ in train + val}
    assert {"r5", "r7", "r9", "r10", "dup_of_r1", "dup_of_r2"}.isdisjoint(ids) and {"r1", "r11"} <= ids
    assert len({s for _, s in train + val}) == len(train) + len(val)
    assert all(s == s.upper() for _, s in train)
    for path in shards.split_files(str(out), "train"):
        for record_id, _ in shards.read_records([path]):
            assert path.endswith(shards.shard_name("train", splits.shard_of(record_id, 4), 4))
    # input order inside a shard; same input -> same bytes
    order = {f"r{i}": i for i in range(600)}
    first = [order[i] for i, _ in shards.read_records(shards.split_files(str(out), "train")[:1])]
    assert first == sorted(first)
    again = shard_pipeline.run(_config([src], tmp_path / "again", **{
        k: getattr(config, k) for k in ("num_shards", "validation_fraction", "dedup", "exclude",
                                        "exclude_hits", "exclude_min_identity")}))
    for p in out.glob("*.tfrecord"):
        assert p.read_bytes() == (tmp_path / "again" / p.name).read_bytes()
    assert again["train"]["records"] == report["train"]["records"]


def test_refuses_non_empty_output_unless_overwrite(tmp_path):
    src = _write_fasta(tmp_path / "in.fasta", [(f"p{i}", "MKTAYIAKQR"[: 3 + i % 7] * 3) for i in range(60)])
    out = tmp_path / "out"
    shard_pipeline.run(_config([src], out, num_shards=8))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(FileExistsError, match="--overwrite"):
        shard_pipeline.run(_config([src], out, num_shards=2))
    assert sorted(p.name for p in out.iterdir()) == before        # untouched
    report = shard_pipeline.run(_config([src], out, num_shards=2, overwrite=True))
    names = sorted(p.name for p in out.iterdir())
    assert not any("-of-00008" in n for n in names)               # the old shards are gone
    assert sum(1 for _ in shards.read_records(shards.split_files(str(out), "train"))) == report["train"]["records"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_bad_input_leaves_nothing_and_names_the_line(tmp_path):
    src = tmp_path / "in.fasta"
    src.write_text(">a\nMKT\n" * 50 + ">bad\nMK-T\n")
    with pytest.raises(FastaFormatError, match=r"in\.fasta:102: alignment gap"):
        shard_pipeline.run(_config([str(src)], tmp_path / "out", num_shards=2))
    (tmp_path / "hits.m8").write_text("only one column\n")
    with pytest.raises(ExclusionFormatError, match=r"hits\.m8:1"):
        shard_pipeline.run(_config([str(src)], tmp_path / "out", num_shards=2,
                                   exclude_hits=(str(tmp_path / "hits.m8"),)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hits.m8", "in.fasta"]


@pytest.mark.slow
def test_shared_pretraining_corpus_with_planted_duplicates_and_test_sets(tmp_path, data_root, pretraining_fasta):
    """The acceptance run: the whole shared corpus plus a file of planted copies -> shards."""
    cb513 = str(data_root / "secondary_structure/netsurfp2_prottrans_csv/CB513_HHblits.csv")
    deeploc = str(data_root / "deeploc/light_attention/deeploc_test_set.fasta")
    corpus = [(r.id, r.sequence) for r in itertools.islice(read_fasta(pretraining_fasta[0]), 40)]
    test_seqs = list(itertools.islice(evaluation_sequences(cb513), 3)) + \
        list(itertools.islice(evaluation_sequences(deeploc), 3))
    planted = [(f"copy_{i}", s) for i, (_, s) in enumerate(corpus[:25])]
    planted += [(f"test_{i}", "".join(s.split())) for i, s in enumerate(test_seqs)]
    extra = _write_fasta(tmp_path / "planted.fasta", planted)
    out = tmp_path / "shards"
    report = shard_pipeline.run(_config(pretraining_fasta + [extra], out, num_shards=8, dedup=True,
                                        exclude=(cb513, deeploc)))
    assert report["records_read"] == 159_963 + len(planted)
    assert report["duplicates_removed"] == 25 and report["excluded_removed"] == len(test_seqs)
    train, val = _records(out, "train"), _records(out, "validation")
    assert len(train) + len(val) == 159_963
    ids = {i for i, _ in train + val}
    assert not any(i.startswith(("copy_", "test_")) for i in ids)   # first occurrences were kept
    assert all(splits.split_of(i) == "train" for i, _ in train) and all(splits.is_validation(i) for i, _ in val)
    excluded = {splits.sequence_key(s) for s in test_seqs}
    assert not any(splits.sequence_key(s) in excluded for _, s in train + val)
    assert json.loads((out / shards.REPORT_FILE).read_text())["train"]["records"] == len(train)

    # read back through the task: batches come from exactly these shards
    from protlm.data.pipeline import open_stream
    from protlm.data.tasks import register_tasks
    register_tasks(fasta_pattern=str(out), shuffle_buffer_size=64)
    try:
        batch = next(open_stream("protbert_mlm", {"inputs": 64}, 4, split="validation", pack=False))
        first_val = [s for _, s in val[:4]]
        from protlm.data import tokens as tok
        got = [tok.decode_protbert(row[row > 4]) for row in batch["encoder_target_tokens"]]
        assert all(g in s.replace("U", "X").replace("Z", "X").replace("O", "X").replace("B", "X")
                   for g, s in zip(got, first_val))
        assert np.all(batch["encoder_input_tokens"][:, 0] == tok.PROTBERT_CLS_ID)
    finally:
        register_tasks()
