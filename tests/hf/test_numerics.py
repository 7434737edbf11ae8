"""Exported models run in transformers (torch fp32) exactly as in protlm, on real proteins.

tiny and small ProtT5 / ProtBert, random init and after 20 training steps: encoder last hidden
states and LM logits agree to 1e-4 on 16 real proteins of mixed lengths, padded; the exported
tokenizers give protlm's ids; and protlm -> HF -> protlm is bit-identical.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from protlm import models
from protlm.hf import export, importer
from protlm.hf.tokenizers import hf_input_text

from .conftest import eval_batch, init_params, train

import torch
import transformers

pytestmark = [pytest.mark.hf, pytest.mark.slow]
TOL = 1e-4
NAMES = ["prot_t5_tiny", "prot_t5_small", "prot_bert_tiny", "prot_bert_small"]


@functools.lru_cache(maxsize=None)
def _params(name: str, trained: bool, seqs: tuple[str, ...]):
    config = models.get_config(name, dtype="float32")
    params = init_params(config)
    if trained:
        params = train(config, params, list(seqs))
    return config, params


def _hf_run(out_dir, config, seqs):
    """(tokenizer ids, attention mask, encoder last hidden, logits) from transformers."""
    spec = models.get_family(config).hf()
    tok = transformers.AutoTokenizer.from_pretrained(out_dir)
    model, info = getattr(transformers, spec.classes[spec.default_part]).from_pretrained(
        out_dir, dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), f"transformers loading report: {info}"
    model.eval()
    enc = tok([hf_input_text(s) for s in seqs], padding=True, return_tensors="pt")
    inputs = spec.torch_inputs(eval_batch(config, seqs))
    inputs.pop("labels")
    inputs.update(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in inputs.items()},
                    output_hidden_states=True)
    # encoder-decoder outputs carry the encoder's last layer, encoder-only ones all layers
    hidden = getattr(out, "encoder_last_hidden_state", None)
    if hidden is None:
        hidden = out.hidden_states[-1]
    return (enc.input_ids.numpy(), enc.attention_mask.numpy().astype(bool), hidden.numpy(),
            out.logits.numpy())


def _check(name, config, params, seqs, out_dir, forward):
    """Exports `params`, compares transformers with protlm, and imports them back."""
    out = export.export_params(params, config, out_dir, progress=False)
    ids, mask, hf_hidden, hf_logits = _hf_run(out, config, seqs)
    batch = eval_batch(config, seqs)
    np.testing.assert_array_equal(ids, batch["encoder_input_tokens"])  # tokenizer == protlm
    hidden, logits = (np.asarray(x) for x in forward(params, batch))
    hidden_diff = np.abs(hidden - hf_hidden)[mask].max()
    logits_diff = np.abs(logits - hf_logits)[mask].max()
    print(f"{name}: max |diff| hidden {hidden_diff:.2e} logits {logits_diff:.2e} "
          f"(logit scale {np.abs(hf_logits[mask]).max():.2f})")
    assert hidden_diff <= TOL and logits_diff <= TOL

    back, back_config = importer.params_from_hf(out, dtype="float32")
    assert back_config == config
    flat = jax.tree_util.tree_leaves_with_path(params)
    back_flat = dict(jax.tree_util.tree_leaves_with_path(back))
    assert set(back_flat) == {p for p, _ in flat}
    for path, leaf in flat:
        assert back_flat[path].dtype == leaf.dtype
        np.testing.assert_array_equal(back_flat[path], leaf, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("name", NAMES)
def test_export_matches_transformers(name, proteins, tmp_path):
    """Random init, then (tiny presets) after 20 training steps: same forward, same ids, exact
    round trip. The small presets check the layout at a realistic width from their random init;
    weights off their init are the tiny cases' job (training a small preset doubles the file)."""
    model = models.get_model(models.get_config(name, dtype="float32"))
    forward = jax.jit(lambda p, b: (model.encode(p, b["encoder_input_tokens"]), model.logits(p, b)))
    for trained in (False, True) if name.endswith("_tiny") else (False,):
        config, params = _params(name, trained, tuple(proteins))
        label = f"{name} {'trained' if trained else 'init'}"
        _check(label, config, params, proteins, tmp_path / label.replace(" ", "_"), forward)


def test_trained_params_moved(proteins):
    """The 'trained' cases test something the init cases do not: weights off their init."""
    _, p0 = _params("prot_t5_tiny", False, tuple(proteins))
    _, p1 = _params("prot_t5_tiny", True, tuple(proteins))
    scale0 = p0["encoder"]["layers_0"]["pre_attention_layer_norm"]["scale"]
    scale1 = p1["encoder"]["layers_0"]["pre_attention_layer_norm"]["scale"]
    assert np.all(scale0 == 1.0) and np.abs(scale1 - 1.0).max() > 1e-3
