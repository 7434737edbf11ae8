"""Fine-tuning through the trainer: frozen weights stay bit-identical and have no optimizer state,
the merged export equals the unmerged LoRA model, and test sets score in protlm.downstream's format.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from protlm import checkpoints, models
from protlm.downstream import report
from protlm.finetune import FinetuneModel, LoraConfig, evaluate, trainable_only

from .conftest import run


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _bits_equal(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(x.tobytes() == y.tobytes() for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, t5_base, data_root):
    """3 LoRA steps on secondary structure with scanned layers (LoRA on stacked kernels)."""
    out = tmp_path_factory.mktemp("lora")
    model, _ = run(out, t5_base, "lora", data_root=data_root, overrides={"scan_layers": True})
    return model, out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lora", "frozen", "full"])
def test_backbone_is_bit_identical_unless_full(mode, tmp_path, t5_base, data_root):
    model, _ = run(tmp_path / mode, t5_base, mode, task="localization", head="light_attention",
                   data_root=data_root)
    base, _ = checkpoints.load_params(t5_base)
    tuned, _ = checkpoints.load_params(tmp_path / mode)
    want = {k: base[k] for k in tuned["backbone"]}
    if mode == "full":
        assert not _bits_equal(tuned["backbone"], want)
    else:
        assert _bits_equal(tuned["backbone"], want)
    if mode == "lora":    # b starts at 0 and moves
        assert any(np.abs(x).max() > 0 for x in _leaves(tuned["lora"])), "LoRA did not train"


@pytest.mark.parametrize("mode", ["lora", "frozen", "full"])
def test_frozen_weights_get_no_optimizer_state(mode):
    """Adam keeps two moments per trainable weight and nothing for the frozen backbone."""
    config = models.get_config("prot_t5_tiny")
    model = FinetuneModel(config, mode, LoraConfig(rank=2), "secondary_structure")
    params = nn.meta.unbox(jax.eval_shape(lambda: model.init(
        jax.random.key(0), {"encoder_input_tokens": jax.ShapeDtypeStruct((2, 8), jnp.int32)}))[
        "params"])
    tx = trainable_only(optax.constant_schedule(1e-3), mode=mode)
    state = jax.eval_shape(tx.init, params)
    size = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(t))  # noqa: E731
    trainable = size({k: v for k, v in params.items() if k != "backbone" or mode == "full"})
    # per optimizer group adam's and the schedule's step counts (full: head + backbone groups)
    counters = 2 * (2 if mode == "full" else 1)
    assert size(state) - trainable * 2 in range(0, counters + 1), (size(state), trainable)


def test_full_mode_backbone_learns_at_its_scaled_rate():
    """BACKBONE_LR_SCALE: the backbone's AdamW update is the scale x the unscaled one, the head's
    is unchanged, and the optimizer state has the same size."""
    config = models.get_config("prot_t5_tiny")
    model = FinetuneModel(config, "full", None, "secondary_structure")
    params = nn.meta.unbox(model.init(
        jax.random.key(0), {"encoder_input_tokens": jnp.ones((2, 8), jnp.int32)})["params"])
    grads = jax.tree_util.tree_map(
        lambda x: jax.random.normal(jax.random.key(x.size), x.shape, x.dtype), params)
    updates, sizes = {}, {}
    for scale in (1.0, 0.1):
        tx = trainable_only(optax.constant_schedule(1e-3), mode="full", backbone_lr_scale=scale)
        state = tx.init(params)
        updates[scale], _ = tx.update(grads, state, params)
        sizes[scale] = sum(x.size for x in jax.tree_util.tree_leaves(state))
    assert sizes[1.0] == sizes[0.1]
    for k in params:
        want = 0.1 if k == "backbone" else 1.0
        for a, b in zip(_leaves(updates[1.0][k]), _leaves(updates[0.1][k])):
            np.testing.assert_allclose(b, want * a, rtol=1e-6, atol=1e-12)
    assert any(np.abs(x).max() > 0 for x in _leaves(updates[0.1]["backbone"]))
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        trainable_only(optax.constant_schedule(1e-3), mode="full", backbone_lr_scale=0.0)


@pytest.mark.slow
def test_merge_then_export_equals_the_unmerged_model(lora_run, tmp_path):
    """The run trained scanned LoRA factors; its export is a plain unscanned model directory
    whose outputs equal the LoRA model's (and differ from the base's: LoRA moved them)."""
    model, out = lora_run
    params = jax.tree_util.tree_map(jnp.asarray, checkpoints.load_params(out)[0])
    export_dir = tmp_path / "merged"
    evaluate.export_merged(model, params, export_dir)
    merged, config = checkpoints.load_params(export_dir)
    assert "layers_0" in merged["encoder"] and "lora" not in merged
    family = models.get_family(config)
    tokens = jnp.asarray(np.stack([np.pad(family.tokenize(s)[0], (0, 40 - len(s) - 1)) for s in
                                   ("MKTAYIAKQRQISFVKSHFSRQ", "MSEQNNTEMTFQIQRIYTKDISFEAPNAP")]))
    unmerged = model.base.encode(model.effective_params(params), tokens)
    plain = family.model(dataclasses.replace(config, scan_layers=False))
    got = plain.encode(jax.tree_util.tree_map(jnp.asarray, merged), tokens)
    assert float(jnp.max(jnp.abs(got - unmerged))) <= 1e-5
    base = model.base.encode(params["backbone"], tokens)
    assert float(jnp.max(jnp.abs(base - unmerged))) > 1e-4


@pytest.mark.slow
def test_test_sets_score_in_the_downstream_format(lora_run, data_root):
    model, out = lora_run
    params, _ = checkpoints.load_params(out)
    results = evaluate.evaluate(model, params, "secondary_structure", str(data_root), limit=6)
    assert set(results["q3"]) == {"CASP12", "TS115", "CB513", "NEW364"}
    for m in results["q3"].values():
        assert m["n_proteins"] == 6 and m["ci_low"] <= m["value"] <= m["ci_high"]
    table = report.run_table({**results, "name": "lora"})
    assert "| Q3 | CB513 |" in table
