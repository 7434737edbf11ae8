"""ProteinDataSource: which shard files a pattern means, and FASTA globs converted once."""
import shutil

import pytest

from protlm.data import shard_pipeline, shards, sources


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    (root / "in.fasta").write_text("".join(f">p{i}\nMKTAYIAKQR{'LG' * (i % 9)}\n" for i in range(300)))
    out = root / "shards"
    shard_pipeline.run(shard_pipeline.ShardConfig(inputs=(str(root / "in.fasta"),), output_dir=str(out),
                                                  num_shards=3, validation_fraction=0.1))
    return out


def test_shard_directory_and_shard_files(shard_dir, tmp_path):
    by_dir = sources.resolve_shards(str(shard_dir))
    assert [p.split("/")[-1] for p in by_dir.train] == [shards.shard_name("train", i, 3) for i in range(3)]
    assert len(by_dir.validation) == 1
    by_glob = sources.resolve_shards(str(shard_dir / "train-*.tfrecord"))
    assert by_glob == by_dir                              # validation from the files' shard directory
    loose = tmp_path / "loose"
    loose.mkdir()
    for p in by_dir.train:
        shutil.copy(p, loose)
    with pytest.raises(ValueError, match="VALIDATION_FASTA_PATTERN"):
        sources.resolve_shards(str(loose / "*.tfrecord"))
    explicit = sources.resolve_shards(str(loose / "*.tfrecord"), str(shard_dir))
    assert explicit.validation == by_dir.validation
    (loose / "x.fasta").write_text(">a\nMKT\n")
    with pytest.raises(ValueError, match="mixes TFRecord shards"):
        sources.resolve_shards(f"{loose}/*")


def test_fasta_glob_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTLM_DATA_CACHE", str(tmp_path / "cache"))
    fasta = tmp_path / "a.fasta"
    fasta.write_text("".join(f">q{i}\nMKV{'W' * (i % 5)}\n" for i in range(400)))
    first = sources.resolve_shards(str(fasta))
    assert len(first.train) == sources.FASTA_CACHE_SHARDS and len(first.validation) == 1
    assert all(p.startswith(str(tmp_path / "cache")) for p in first.train)

    def converting(*args, **kwargs):
        raise RuntimeError("converting again")

    monkeypatch.setattr(shard_pipeline, "run", converting)
    assert sources.resolve_shards(str(fasta)) == first                   # cached: not converted again
    fasta.write_text(fasta.read_text() + ">new\nMKKK\n")                   # a changed file is a new key
    with pytest.raises(RuntimeError, match="converting again"):
        sources.resolve_shards(str(fasta))


def test_empty_validation_split_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTLM_DATA_CACHE", str(tmp_path / "cache"))
    fasta = tmp_path / "few.fasta"
    fasta.write_text(">only_one\nMKTAYIAKQR\n")
    source = sources.ProteinDataSource(str(fasta))
    assert source.list_shards("train")
    with pytest.raises(ValueError, match="validation split .* has no records.*VALIDATION_FASTA_PATTERN"):
        source.list_shards("validation")
