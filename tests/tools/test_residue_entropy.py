"""tools/residue_entropy.py: the unigram baseline the quickstarts are judged against."""
import collections
import json
import math

from tests.tools.test_bench import _load

re_tool = _load("residue_entropy")


def test_entropy_of_known_distributions():
    assert re_tool.entropy_nats(collections.Counter("AAAA")) == 0.0
    assert abs(re_tool.entropy_nats(collections.Counter("ACDE" * 5)) - math.log(4)) < 1e-12


def test_validation_split_counts_rare_residues_as_x(tmp_path, capsys):
    fasta = tmp_path / "p.fasta"
    ids = [f"P{i}" for i in range(400)]
    fasta.write_text("".join(f">{i}\nMKUZ\n" for i in ids))
    from protlm.data import splits
    n_val = sum(splits.is_validation(i) for i in ids)
    assert 0 < n_val < 400
    assert re_tool.main(["--fasta_pattern", str(fasta), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == n_val and out["residues"] == 4 * n_val
    # M, K, X, X: entropy of (1/4, 1/4, 1/2)
    assert abs(out["entropy_nats"] - (2 * 0.25 * math.log(4) + 0.5 * math.log(2))) < 1e-12
    assert re_tool.main(["--validation_fasta_pattern", str(fasta), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 400
