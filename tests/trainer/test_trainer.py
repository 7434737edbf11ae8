"""The train loop on tiny models: mesh invariance, exact resume, accumulation, non-finite stop."""
import numpy as np
import pytest

from protlm import checkpoints, partitioning
from tests.trainer import helpers

MESHES = {
    "data4_model2": partitioning.PartitionConfig(data=4, model=2),
    "fsdp8": partitioning.PartitionConfig(data=1, fsdp=8, rules="fsdp"),
}
# One mesh that uses all three axes at once (batch over data x fsdp, parameters' embed dims over
# fsdp, heads / mlp / vocab over model): the encoder-only families' trainer check. ProtT5 runs on
# both layouts above; every family's network is also checked sharded == single device, with its
# gradients, in tests/test_partitioning.py and the family's own model tests.
MIXED_MESH = {"data2_fsdp2_model2": partitioning.PartitionConfig(data=2, fsdp=2, model=2,
                                                                   rules="fsdp")}


@pytest.mark.parametrize("preset,meshes", [("prot_t5_tiny", MESHES), ("prot_bert_tiny", MIXED_MESH)],
                         ids=["prot_t5_tiny", "prot_bert_tiny"])
def test_first_losses_do_not_depend_on_the_mesh(tmp_path, preset, meshes):
    ref = helpers.run(tmp_path / "one", preset, partition=partitioning.PartitionConfig(num_devices=1))
    assert ref["status"] == "done"
    base = helpers.losses(tmp_path / "one")
    assert len(base) == 5 and base[-1] < base[0]
    for name, partition in meshes.items():
        helpers.run(tmp_path / name, preset, partition=partition)
        got = helpers.losses(tmp_path / name)
        np.testing.assert_allclose(got, base, rtol=1e-5, err_msg=f"{preset} on {name}")


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    partition = partitioning.PartitionConfig(data=4, model=2)
    helpers.run(tmp_path / "full", steps=6, partition=partition, checkpoint_every=2)
    helpers.run(tmp_path / "split", steps=3, partition=partition, checkpoint_every=2)
    assert checkpoints.latest_step(tmp_path / "split") == 3
    out = helpers.run(tmp_path / "split", steps=6, partition=partition, checkpoint_every=2)
    assert out["step"] == 6
    a, _ = checkpoints.load_params(tmp_path / "full")
    b, _ = checkpoints.load_params(tmp_path / "split")
    assert helpers.max_abs_diff(a, b) <= 1e-6
    # the resumed run logged steps 4..6 with the uninterrupted run's losses
    full, split = helpers.losses(tmp_path / "full"), helpers.losses(tmp_path / "split")
    np.testing.assert_allclose(split[3:], full[3:], rtol=1e-6)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    partition = partitioning.PartitionConfig(data=4, model=2)
    helpers.run(tmp_path / "big", steps=3, partition=partition)
    helpers.run(tmp_path / "accum", steps=3, partition=partition, accum_steps=2)
    np.testing.assert_allclose(helpers.losses(tmp_path / "accum"), helpers.losses(tmp_path / "big"),
                               rtol=1e-5)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # lr 1e30 blows the parameters up after a few steps
    out = helpers.run(tmp_path, steps=30, checkpoint_every=1, lr=1e30,
                      partition=partitioning.PartitionConfig(num_devices=1))
    assert out["status"] == "nonfinite"
    last = checkpoints.latest_step(tmp_path)
    assert last is not None and last < 30
    params, _ = checkpoints.load_params(tmp_path)
    import jax
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(params))


def test_eval_reports_masked_residue_metrics(tmp_path):
    out = helpers.run(tmp_path, steps=2, eval_every=2, partition=partitioning.PartitionConfig(num_devices=1))
    ev = out["eval"]
    assert set(ev) >= {"loss", "accuracy", "masked_residue_loss", "masked_residue_accuracy"}
    # ProtT5 targets include the visible residues: their loss is averaged in "loss" only
    assert ev["masked_residue_loss"] != ev["loss"]
    assert (tmp_path / "metrics" / "eval.jsonl").exists()


def test_dropout_prng_impl_reaches_the_step(tmp_path):
    """PRNG_IMPL picks the dropout keys: same init, different masks, both train."""
    one = partitioning.PartitionConfig(num_devices=1)
    runs = {impl: helpers.run(tmp_path / impl, steps=3, partition=one, prng_impl=impl,
                              dropout_rate=0.3) for impl in ("threefry2x32", "rbg")}
    curves = {impl: helpers.losses(tmp_path / impl) for impl in runs}
    assert all(np.isfinite(c).all() and len(c) == 3 for c in curves.values())
    assert curves["threefry2x32"] != curves["rbg"]
    with pytest.raises(ValueError, match="PRNG_IMPL"):
        helpers.run(tmp_path / "bad", steps=1, partition=one, prng_impl="no_such_prng")
