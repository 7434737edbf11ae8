"""`python -m protlm.models.summary` for ProtXLNet and ProtTXL: exact counts, FLOPs with memory."""
import json

import pytest

from protlm import models
from protlm.models import summary


@pytest.mark.parametrize("name,count,hf_count", [
    ("prot_xlnet", 409_413_669, 409_413_669),      # == transformers 5 XLNetLMHeadModel (meta)
    ("prot_txl", 409_251_868, 409_433_116),        # export adds zero segment terms + lm_loss
    ("prot_txl_bfd", 562_363_932, None)])           # 14 heads x 128 != 1024: no XLNetConfig
def test_summary_counts(capsys, name, count, hf_count):
    summary.main(["--model", name, "--json"])
    s = json.loads(capsys.readouterr().out)
    assert s["num_params"] == count == sum(s["modules"].values())
    assert s["param_counts"].get("XLNetLMHeadModel") == hf_count
    assert s["flops_per_token"] == pytest.approx(s["flops_per_example"] / 512)


def test_flops_grow_with_the_memory():
    lengths = {"inputs": 512}
    base = models.get_config("prot_txl", mem_len=0).flops_per_token(lengths)
    with_mem = models.get_config("prot_txl", mem_len=512).flops_per_token(lengths)
    cfg = models.get_config("prot_txl")
    d, nh, layers = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_layers
    # per token: keys/values over 512 more positions (6 x 2 x d x nh) and scores against them
    extra = 3 * layers * 2 * (2 * d * nh + 3 * 512 * nh)
    assert with_mem - base == pytest.approx(extra, rel=1e-9)
    assert 6 * cfg.num_params() < base       # 6 x params + attention


def test_xlnet_flops_count_both_streams():
    cfg = models.get_config("prot_xlnet")
    two = cfg.flops_per_example({"inputs": 512, "targets": 85})
    fewer = cfg.flops_per_example({"inputs": 512, "targets": 1})
    assert two > fewer > 0
