"""tools/bench_train.py and tools/bench_embed.py on ProtAlbert (protlm vs transformers' ALBERT):
they run, report MFU's inputs and agree on what they measure; they time nothing here."""
import pytest

from protlm.data.fasta import read_fasta
from tests.tools import test_bench

# prot_albert_tiny has 512 positions ([CLS] + 510 residues + [SEP]): embed proteins that fit.
TINY_MAX_RESIDUES = 510


@pytest.mark.slow
@pytest.mark.hf
def test_bench_train_cli_albert(data_root):
    test_bench.test_bench_train_cli("prot_albert_tiny", data_root)


@pytest.mark.slow
@pytest.mark.hf
def test_bench_embed_cli_albert(data_root, tmp_path):
    fitting = [r for r in read_fasta(str(data_root / test_bench.bc.DEEPLOC_TEST))
               if len(r.sequence) <= TINY_MAX_RESIDUES][:6]
    fasta = tmp_path / "short.fasta"
    fasta.write_text("".join(f">{r.id}\n{r.sequence}\n" for r in fitting), encoding="ascii")
    rec = test_bench._run("bench_embed", "--model", "prot_albert_tiny", "--fasta", str(fasta),
                          "--data_root", str(data_root))
    assert rec["family"] == "albert" and rec["proteins"] == 6
    for side in ("protlm", "transformers"):
        assert rec[side]["residues_per_second"] > 0
