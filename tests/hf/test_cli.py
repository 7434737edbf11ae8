"""`python -m protlm.export_hf` / `protlm.import_hf` on orbax checkpoints, and their errors."""
from __future__ import annotations

import json
import pathlib
import re

import jax
import numpy as np
import pytest

from protlm import checkpoints, export_hf, import_hf, models
from protlm.hf import export
from protlm.hf.weights_reader import HFWeights

from .conftest import init_params

pytestmark = pytest.mark.hf


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    """A protlm model dir with a tiny ProtT5 saved at step 7."""
    config = models.get_config("prot_t5_tiny")
    params = init_params(config, seed=3)
    model_dir = tmp_path_factory.mktemp("run") / "t5"
    checkpoints.save_params(model_dir, params, config, step=7)
    return model_dir, params, config


def _assert_trees_equal(a, b):
    fa, fb = jax.tree_util.tree_leaves_with_path(a), dict(jax.tree_util.tree_leaves_with_path(b))
    assert {p for p, _ in fa} == set(fb)
    for path, leaf in fa:
        np.testing.assert_array_equal(np.asarray(leaf), fb[path], err_msg=jax.tree_util.keystr(path))


def test_export_then_import_cli_roundtrip(t5_run, tmp_path):
    import transformers
    model_dir, params, config = t5_run
    out = tmp_path / "hf"
    assert export_hf.main(["--checkpoint_dir", str(model_dir), "--output_dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "special_tokens_map.json", "spiece.model",
        "tokenizer_config.json"]
    assert not list(tmp_path.glob(".hf.tmp-*"))
    _, info = transformers.T5ForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info.values())

    back_dir = tmp_path / "imported"
    assert import_hf.main(["--hf_dir", str(out), "--output_dir", str(back_dir), "--step", "3",
                           "--dtype", "float32"]) == 0
    back, back_config = checkpoints.load_params(back_dir)
    assert back_config == config
    _assert_trees_equal(params, back)


def test_encoder_only_half_export_and_reimport(t5_run, tmp_path):
    import transformers
    import torch
    model_dir, params, config = t5_run
    out = tmp_path / "enc"
    assert export_hf.main(["--checkpoint_dir", str(model_dir), "--step", "7", "--output_dir",
                           str(out), "--encoder_only", "--dtype", "float16"]) == 0
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["architectures"] == ["T5EncoderModel"] and hf_config["torch_dtype"] == "float16"
    weights = HFWeights(str(out))
    assert not any(k.startswith("decoder.") for k in weights.keys())
    assert {str(weights[k].dtype) for k in weights.keys()} == {"float16"}
    model, info = transformers.T5EncoderModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()) and model.dtype == torch.float16

    back_dir = tmp_path / "enc_run"
    assert import_hf.main(["--hf_dir", str(out), "--output_dir", str(back_dir)]) == 0
    back, _ = checkpoints.load_params(back_dir)
    assert sorted(back) == ["encoder", "token_embedder"]
    half = jax.tree_util.tree_map(lambda x: np.asarray(x).astype(np.float16).astype(np.float32),
                                  {k: params[k] for k in back})
    _assert_trees_equal(half, back)
    # An encoder-only checkpoint exports as T5EncoderModel without the flag.
    again = tmp_path / "enc_again"
    assert export_hf.main(["--checkpoint_dir", str(back_dir), "--output_dir", str(again),
                           "--dtype", "float16"]) == 0
    assert json.loads((again / "config.json").read_text())["architectures"] == ["T5EncoderModel"]


def test_bert_cli_sharded(tmp_path):
    config = models.get_config("prot_bert_tiny")
    params = init_params(config, seed=4)
    checkpoints.save_params(tmp_path / "run", params, config)
    out = tmp_path / "hf"
    assert export_hf.main(["--checkpoint_dir", str(tmp_path / "run"), "--output_dir", str(out),
                           "--max_shard_size", "40KB"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert (out / "vocab.txt").is_file()
    assert import_hf.main(["--hf_dir", str(out), "--output_dir", str(tmp_path / "back")]) == 0
    _assert_trees_equal(params, checkpoints.load_params(tmp_path / "back")[0])


def test_export_errors(t5_run, tmp_path, capsys):
    model_dir, params, config = t5_run
    assert export_hf.main(["--checkpoint_dir", str(tmp_path / "nope"), "--output_dir",
                           str(tmp_path / "o")]) == 2
    assert "no model config" in capsys.readouterr().err
    assert export_hf.main(["--checkpoint_dir", str(model_dir), "--step", "5", "--output_dir",
                           str(tmp_path / "o")]) == 2
    assert "no checkpoint at step 5; available: [7]" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert export_hf.main(["--checkpoint_dir", str(model_dir), "--output_dir",
                           str(tmp_path / "taken")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert export_hf.main(["--checkpoint_dir", str(model_dir), "--output_dir",
                           str(tmp_path / "taken"), "--overwrite"]) == 0
    assert (tmp_path / "taken" / "model.safetensors").is_file()


def test_incompatible_params_leave_nothing_behind(t5_run, tmp_path):
    _, params, config = t5_run
    broken = {**params, "encoder": {k: v for k, v in params["encoder"].items() if k != "layers_1"}}
    with pytest.raises(ValueError, match=r"params without an HF name: \[\]; mapped names not in "
                                         r"the params: \['encoder/layers_1/attention/key/kernel'"):
        export.export_params(broken, config, tmp_path / "out", progress=False)
    big = models.get_config("prot_t5_tiny", emb_dim=48)
    with pytest.raises(ValueError, match=r"params do not match their config \(T5Config\): \d+ "
                                         r"shapes differ, e.g. \['decoder/decoder_norm/scale \(32,\) "
                                         r"!= \(48,\)'"):
        export.export_params(params, big, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []
    # A failure halfway through writing removes the temporary directory.
    huge = jax.tree_util.tree_map(np.asarray, params)
    huge["decoder"]["decoder_norm"]["scale"] = np.full_like(huge["decoder"]["decoder_norm"]["scale"],
                                                            1e6)
    with pytest.raises(ValueError, match=r"decoder.final_layer_norm.weight \(decoder/decoder_norm/"
                                         r"scale\) overflows float16"):
        export.export_params(huge, config, tmp_path / "out", dtype="float16", progress=False)
    assert list(tmp_path.iterdir()) == []
    untied = models.get_config("prot_t5_tiny", logits_via_embedding=False)
    with pytest.raises(ValueError, match="transformers 5 ties T5's lm_head"):
        export.export_params(init_params(untied), untied, tmp_path / "out", progress=False)


def test_docs_snippet_runs_on_an_export(t5_run, tmp_path, monkeypatch):
    """The user snippet of docs/huggingface.md works on an encoder-only fp16 export."""
    import transformers  # noqa: F401
    _, params, config = t5_run
    export.export_params(params, config, tmp_path / "hf" / "prot_t5_xl_half_enc",
                         part="encoder", dtype="float16", progress=False)
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "huggingface.md").read_text()
    code = re.search(r"### Using an exported ProtT5 encoder.*?```python\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/huggingface.md", "exec"), scope)  # noqa: S102 (our own docs)
    assert [tuple(e.shape) for e in scope["per_residue"]] == [(7, 32), (8, 32)]
    assert tuple(scope["per_protein"][1].shape) == (32,)
