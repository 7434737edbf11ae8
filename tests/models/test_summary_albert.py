"""`python -m protlm.models.summary --model prot_albert`: Rostlab's exact counts and FLOPs."""
import json
import subprocess
import sys

from protlm.models import summary


def test_module_entry_point_prints_the_transformers_counts():
    out = subprocess.run([sys.executable, "-m", "protlm.models.summary", "--model", "prot_albert"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "parameters:        207,557,794" in out
    assert "as AlbertForMaskedLM: 207,557,794" in out and "as AlbertModel: 223,814,400" in out
    assert "encoder/layer_groups_0/mlp" in out and "training FLOPs per token" in out


def test_json_breakdown_one_shared_layer(capsys):
    summary.main(["--model", "prot_albert", "--json", "--length", "2048"])
    s = json.loads(capsys.readouterr().out)
    assert s["num_params"] == 207_557_794 and s["lengths"] == {"inputs": 2048}
    assert s["modules"]["encoder/layer_groups_0/mlp"] == 2 * 4096 * 16384 + 16384 + 4096  # once
    assert sum(s["modules"].values()) == s["num_params"]
    assert s["flops_per_token"] == s["flops_per_example"] / 2048
