"""An exported LoRA-fine-tuned model is an ordinary transformers 5 directory that computes what
the (unmerged) LoRA model computes in protlm."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from protlm import checkpoints, models
from protlm.finetune import evaluate
from protlm.hf import export

from .conftest import run, write_base

pytestmark = [pytest.mark.hf, pytest.mark.slow]
SEQS = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSEQNNTEMTFQIQRIYTKDISFEAPNAPHVFQKDW", "MGSSHHHHHH")


@pytest.mark.parametrize("preset", ["prot_t5_tiny", "prot_bert_tiny"])
def test_exported_lora_model_loads_in_transformers_and_matches(preset, tmp_path, data_root):
    write_base(tmp_path / "base", preset)
    model, _ = run(tmp_path / "run", tmp_path / "base", "lora", data_root=data_root)
    params = jax.tree_util.tree_map(jnp.asarray, checkpoints.load_params(tmp_path / "run")[0])
    evaluate.export_merged(model, params, tmp_path / "merged")
    export.export_checkpoint(tmp_path / "merged", tmp_path / "hf", progress=False)

    family = models.get_family(model.config)
    spec = family.hf()
    rows = [family.tokenize(s)[0] for s in SEQS]
    tokens = np.zeros((len(rows), max(map(len, rows))), np.int64)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = r
    ours = np.asarray(model.base.encode(model.effective_params(params), jnp.asarray(tokens)))
    merged, _ = checkpoints.load_params(tmp_path / "merged")
    cls = spec.classes[spec.params_part(merged)]       # T5EncoderModel, BertForMaskedLM
    hf, info = getattr(transformers, cls).from_pretrained(
        tmp_path / "hf", dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), f"transformers loading report: {info}"
    hf.eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.as_tensor(tokens), attention_mask=torch.as_tensor(tokens != 0),
                    output_hidden_states=True).hidden_states[-1].numpy()
    mask = tokens != 0
    assert float(np.max(np.abs(ours[mask] - theirs[mask]))) <= 1e-4
    base = np.asarray(model.base.encode(params["backbone"], jnp.asarray(tokens)))
    assert float(np.max(np.abs(base[mask] - theirs[mask]))) > 1e-4   # the export carries LoRA
