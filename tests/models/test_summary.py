"""`python -m protlm.models.summary`: counts, breakdown and FLOPs without allocating."""
import json
import subprocess
import sys

import pytest

from protlm.models import summary


def test_json_summary_xl(capsys):
    summary.main(["--model", "prot_t5_xl", "--json"])
    s = json.loads(capsys.readouterr().out)
    assert s["num_params"] == 2_818_830_336
    assert s["param_counts"] == {"T5ForConditionalGeneration": 2_818_830_336,
                                 "T5EncoderModel": 1_208_141_824}
    assert s["lengths"] == {"inputs": 512, "targets": 512} and s["tokens_per_example"] == 1024
    assert sum(s["modules"].values()) == s["num_params"]
    assert s["modules"]["encoder/layers_*/mlp"] == 24 * 2 * 1024 * 16384
    assert s["flops_per_token"] == pytest.approx(s["flops_per_example"] / 1024)


def test_table_and_overrides(capsys):
    summary.main(["--model", "prot_bert_tiny", "--set", "num_layers=3", "--length", "128"])
    out = capsys.readouterr().out
    assert "encoder/layers_*/attention" in out and "parameters:" in out
    with pytest.raises(SystemExit):
        summary.main(["--model", "prot_bert_tiny", "--set", "hiddn=3"])


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "protlm.models.summary", "--model", "prot_bert"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "419,933,214" in out and "as BertForMaskedLM: 419,933,214" in out


def test_target_length_changes_decoder_flops(capsys):
    summary.main(["--model", "prot_t5_tiny", "--json", "--length", "64", "--target_length", "16"])
    s = json.loads(capsys.readouterr().out)
    assert s["lengths"] == {"inputs": 64, "targets": 16} and s["tokens_per_example"] == 80
