"""tools/reproduce_table.py end to end on a few proteins: a tiny saved model plus the one-hot baseline."""
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("reproduce_table", REPO / "tools" / "reproduce_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reproduce_table_with_a_tiny_model(tmp_path, data_root):
    import flax.linen as nn

    from protlm import checkpoints, models

    cfg = models.get_config("prot_t5_tiny")
    shapes = {k: jnp.zeros((1, 8), jnp.int32) for k in ("encoder_input_tokens", "decoder_input_tokens")}
    params = nn.unbox(models.get_model(cfg).init(jax.random.PRNGKey(0), shapes)["params"])
    checkpoints.save_params(tmp_path / "tiny", params, cfg)

    tool = _tool()
    rc = tool.main(["--work_dir", str(tmp_path / "w"), "--model", str(tmp_path / "tiny"), "--name", "tiny",
                    "--baselines", "onehot", "--data_root", str(data_root), "--limit", "10", "--seed", "0"])
    assert rc == 0
    table = (tmp_path / "w" / "table.md").read_text()
    assert "| onehot |" in table and "| tiny |" in table and "n/a" not in table
    data = json.loads((tmp_path / "w" / "table.json").read_text())
    assert data["timings"]["tiny"]["embed_localization_residues_per_s"] > 0
    tiny_loc = data["rows"]["tiny"][1]
    assert tiny_loc["features"]["kind"] == "embeddings" and tiny_loc["q10"]["DeepLoc"]["n_proteins"] == 10
    # A rerun reuses every finished result and embedding.
    again = tool.reproduce(tmp_path / "w", [str(tmp_path / "tiny")], ["tiny"], ("onehot",), data_root, limit=10)
    assert again["rows"]["tiny"][0]["q3"] == data["rows"]["tiny"][0]["q3"]
