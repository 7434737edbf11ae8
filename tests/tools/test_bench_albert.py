"""tools/bench_train.py and tools/bench_embed.py on ProtAlbert (protlm vs transformers' ALBERT):
they run, report MFU's inputs and agree on what they measure; they time nothing here."""
import pytest

from tests.tools import test_bench


@pytest.mark.slow
@pytest.mark.hf
def test_bench_train_cli_albert(data_root):
    test_bench.test_bench_train_cli("prot_albert_tiny", data_root)


@pytest.mark.slow
@pytest.mark.hf
def test_bench_embed_cli_albert(data_root):
    rec = test_bench._run("bench_embed", "--model", "prot_albert_tiny", "--limit", "6",
                          "--data_root", str(data_root))
    assert rec["family"] == "albert" and rec["proteins"] == 6
    for side in ("protlm", "transformers"):
        assert rec[side]["residues_per_second"] > 0
