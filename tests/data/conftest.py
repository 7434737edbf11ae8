"""Fixtures of the data tests: a small real corpus (records of the shared pretraining FASTA)."""
import gzip
import itertools

import pytest

from protlm.data.fasta import read_fasta

RECORDS_PER_FILE = 120


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, pretraining_fasta):
    """4 gzip FASTA shards of 120 real records each (one per corpus part). Returns the glob."""
    root = tmp_path_factory.mktemp("corpus")
    for i, path in enumerate(pretraining_fasta):
        recs = itertools.islice(read_fasta(path), 1000, 1000 + RECORDS_PER_FILE)
        text = "".join(f">{r.id} {r.description}\n{r.sequence}\n" for r in recs)
        (root / f"part{i}.fasta.gz").write_bytes(gzip.compress(text.encode()))
    return str(root / "part*.fasta.gz")


@pytest.fixture()
def small_tasks(small_corpus):
    """Tasks registered on `small_corpus` with a small shuffle buffer; defaults restored after."""
    from protlm.data.tasks import register_tasks

    register_tasks(fasta_pattern=small_corpus, shuffle_buffer_size=64)
    yield small_corpus
    register_tasks()
