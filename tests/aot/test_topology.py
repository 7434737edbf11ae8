"""Topology names, libtpu's abstract devices, multi-slice meshes and the roofline arithmetic."""
import sys

import pytest

from protlm import metrics, partitioning
from protlm.aot import counts, roofline, topology


def test_parse_topology_names():
    assert topology.parse_topology("v5p:4x4x4") == ("v5p", (4, 4, 4))
    assert topology.parse_topology("v3:16x32") == ("v3", (16, 32))
    for bad in ("v4-128", "v9:2x2", "v5e:16"):
        with pytest.raises(ValueError, match="GENERATION:CHIPS_PER_AXIS"):
            topology.parse_topology(bad)


def test_missing_libtpu_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "libtpu", None)         # import libtpu -> ImportError
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[tpu\]"'):
        topology.topology_devices("v4:2x2x1")


@pytest.mark.libtpu
@pytest.mark.parametrize("name, count, kind, per_chip", [
    ("v3:4x4", 32, "TPU v3", 2), ("v4:2x2x1", 4, "TPU v4", 1), ("v5e:2x2", 4, "TPU v5 lite", 1),
    ("v5p:2x2x1", 4, "TPU v5", 1), ("v6e:2x2", 4, "TPU v6 lite", 1)])
def test_topology_devices_and_their_specs(libtpu, name, count, kind, per_chip):
    devices = topology.topology_devices(name)
    assert len(devices) == count and devices[0].device_kind == kind
    spec = metrics.tpu_spec(kind)
    assert spec.devices_per_chip == per_chip and spec.hbm_bytes >= 16e9
    assert metrics.peak_flops_per_device(kind) > 0


@pytest.mark.libtpu
def test_multi_slice_mesh_puts_slices_on_the_data_axis(libtpu):
    devices = topology.topology_devices("v5e:2x2", num_slices=2)
    assert sorted({d.slice_index for d in devices}) == [0, 1]
    mesh = partitioning.create_mesh(data=2, model=4, devices=devices)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "model": 4}
    for row, slice_index in zip(mesh.devices[:, 0, :], (0, 1)):
        assert {d.slice_index for d in row} == {slice_index}
    with pytest.raises(ValueError, match="MESH_DATA"):
        partitioning.create_mesh(data=1, model=8, devices=devices)


def _collective(group, kind="all-gather", nbytes=1e9):
    return counts.Collective("c", kind, nbytes, 1.0, (tuple(group),))


@pytest.mark.libtpu
def test_ring_bandwidth_follows_the_torus_axes(libtpu):
    devices = topology.topology_devices("v4:4x4x4")          # 64 chips, wraparound (4 | 4)
    spec = metrics.tpu_spec("TPU v4")
    by_coords = {tuple(d.coords): i for i, d in enumerate(devices)}
    x_ring = [by_coords[(x, 0, 0)] for x in range(4)]
    xy_plane = [by_coords[(x, y, 0)] for x in range(4) for y in range(4)]
    half_x = [by_coords[(x, 0, 0)] for x in range(2)]
    assert roofline.group_link(x_ring, devices, spec).bandwidth == 2 * spec.ici_link_bandwidth
    assert roofline.group_link(xy_plane, devices, spec).bandwidth == 4 * spec.ici_link_bandwidth
    assert roofline.group_link(half_x, devices, spec).bandwidth == spec.ici_link_bandwidth
    assert roofline.collective_seconds(_collective(x_ring), devices, spec) == (
        "ici", pytest.approx(1e9 / (2 * spec.ici_link_bandwidth)))


@pytest.mark.libtpu
def test_groups_across_slices_use_dcn(libtpu):
    devices = topology.topology_devices("v5e:2x2", num_slices=2)
    spec = metrics.tpu_spec("TPU v5 lite")
    across = [0, 4]
    assert {devices[i].slice_index for i in across} == {0, 1}
    network, seconds = roofline.collective_seconds(_collective(across, "all-reduce"), devices,
                                                   spec)
    assert network == "dcn" and seconds == pytest.approx(1e9 / spec.dcn_bandwidth_per_chip)


@pytest.mark.libtpu
def test_bound_is_the_slowest_resource(libtpu):
    devices = topology.topology_devices("v4:2x2x1")
    spec, peak = metrics.tpu_spec("TPU v4"), metrics.peak_flops_per_device("TPU v4")
    step = counts.StepCounts(matmul_flops=1.2 * peak, hbm_bytes=0.5 * spec.hbm_bandwidth,
                             collectives=())
    r = roofline.bound(step, model_flops=peak, peak_flops=peak, devices=devices, spec=spec)
    assert r["compute_seconds"] == pytest.approx(1.2) and r["hbm_seconds"] == pytest.approx(0.5)
    assert r["step_seconds_overlap"] == pytest.approx(1.2)
    assert r["mfu_bound"] == pytest.approx(1 / 1.2)
    assert r["mfu_bound_no_overlap"] == pytest.approx(1 / 1.7)
