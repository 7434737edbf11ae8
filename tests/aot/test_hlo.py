"""The HLO text reader and counters on hand-written modules (no compiler needed)."""
import pytest

from protlm.aot import counts, hlo

# A scan of 24 iterations (counter at tuple index 0, from a copied constant 0) whose body does
# one TPU-style dot-as-convolution ([8,64,32] x [32,2,8]; heads as a padded window dim) and
# one all-reduce over groups of 2; the entry all-gathers a [4,128] f32 shard over 4 devices.
MODULE = """HloModule jit_step, entry_computation_layout={(f32[4,128])->f32[16,128]}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%fused_conv (param_0.1: bf16[8,64,32,1], param_1.1: bf16[32,2,8,1]) -> bf16[8,64,2,8] {
  %param_0.1 = bf16[8,64,32,1]{1,2,3,0:T(8,128)(2,1)} parameter(0)
  %param_1.1 = bf16[32,2,8,1]{0,2,1,3:T(8,128)(2,1)} parameter(1)
  ROOT %convolution.1 = bf16[8,64,2,8]{1,3,2,0:T(8,128)(2,1)} convolution(%param_0.1, %param_1.1), window={size=1x2 pad=0_0x1_1 rhs_reversal=0x1}, dim_labels=0bf1_i1o0->0b1f
}

%fused_slice (param_0.2: bf16[24,32,2,8,1], param_1.2: s32[]) -> bf16[1,32,2,8,1] {
  %param_0.2 = bf16[24,32,2,8,1]{4,3,2,1,0} parameter(0)
  %param_1.2 = s32[] parameter(1)
  %constant.9 = s32[] constant(0)
  ROOT %dynamic-slice.1 = bf16[1,32,2,8,1]{4,3,2,1,0} dynamic-slice(%param_0.2, %param_1.2, %constant.9, %constant.9, %constant.9, %constant.9), dynamic_slice_sizes={1,32,2,8,1}
}

%body (p: (s32[], bf16[8,64,32,1], bf16[24,32,2,8,1])) -> (s32[], bf16[8,64,32,1], bf16[24,32,2,8,1]) {
  %p = (s32[]{:T(128)}, bf16[8,64,32,1]{1,2,3,0:T(8,128)(2,1)}, /*index=2*/bf16[24,32,2,8,1]{4,3,2,1,0}) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  %x = bf16[8,64,32,1]{1,2,3,0:T(8,128)(2,1)} get-tuple-element(%p), index=1
  %w = bf16[24,32,2,8,1]{4,3,2,1,0} get-tuple-element(%p), index=2
  %one = s32[] constant(1)
  %next = s32[] add(%i, %one)
  %slice = bf16[1,32,2,8,1]{4,3,2,1,0} fusion(%w, %i), kind=kLoop, calls=%fused_slice
  %wb = bf16[32,2,8,1]{0,2,1,3:T(8,128)(2,1)} bitcast(%slice)
  %y = bf16[8,64,2,8]{1,3,2,0:T(8,128)(2,1)} fusion(%x, %wb), kind=kOutput, calls=%fused_conv, metadata={op_name="jit(step)/while/body/layers/attention/query/dot_general"}
  %r = bf16[8,64,2,8]{1,3,2,0:T(8,128)(2,1)} all-reduce(%y), channel_id=1, replica_groups=[2,2]<=[4], use_global_device_ids=true, to_apply=%add
  ROOT %t = (s32[], bf16[8,64,32,1], bf16[24,32,2,8,1]) tuple(%next, %x, %w)
}

%cond (q: (s32[], bf16[8,64,32,1], bf16[24,32,2,8,1])) -> pred[] {
  %q = (s32[], bf16[8,64,32,1], bf16[24,32,2,8,1]) parameter(0)
  %c = s32[] get-tuple-element(%q), index=0
  %n = s32[] constant(24)
  ROOT %lt = pred[] compare(%c, %n), direction=LT
}

ENTRY %main (arg: f32[4,128], x0: bf16[8,64,32,1], w0: bf16[24,32,2,8,1]) -> f32[16,128] {
  %arg = f32[4,128]{1,0} parameter(0)
  %x0 = bf16[8,64,32,1]{1,2,3,0:T(8,128)(2,1)} parameter(1)
  %w0 = bf16[24,32,2,8,1]{4,3,2,1,0} parameter(2)
  %zero = s32[] constant(0)
  %start = s32[]{:T(128)} copy(%zero)
  %init = (s32[], bf16[8,64,32,1], bf16[24,32,2,8,1]) tuple(%start, %x0, %w0)
  %loop = (s32[], bf16[8,64,32,1], bf16[24,32,2,8,1]) while(%init), condition=%cond, body=%body
  ROOT %ag = f32[16,128]{1,0} all-gather(%arg), channel_id=2, replica_groups={{0,1,2,3}}, dimensions={0}, use_global_device_ids=true
}
"""


@pytest.fixture(scope="module")
def module():
    return hlo.parse_module(MODULE)


def test_types_drop_layouts_and_flatten_tuples():
    arrays = hlo.parse_type("(s32[]{:T(128)}, bf16[8,64]{1,0:T(8,128)(2,1)S(3)}, /*index=2*/"
                            "(f32[2,3], pred[5]))")
    assert [(a.dtype, a.dims) for a in arrays] == [("s32", ()), ("bf16", (8, 64)),
                                                   ("f32", (2, 3)), ("pred", (5,))]
    assert [a.bytes for a in arrays] == [4, 8 * 64 * 2, 24, 5]


def test_module_structure_and_trip_count(module):
    assert module.entry == "main"
    assert set(module.computations) >= {"add", "fused_conv", "body", "cond", "main"}
    main = module["main"]
    loop = main.by_name["loop"]
    assert loop.called("body") == ["body"] and loop.called("condition") == ["cond"]
    assert hlo.trip_count(module, main, loop) == 24
    assert hlo.unknown_loops(module) == []
    mults = {inst.name: mult for _, inst, mult, _ in hlo.walk(module)}
    assert mults["y"] == 24 and mults["convolution.1"] == 24 and mults["ag"] == 1


def test_replica_group_forms():
    def groups(attrs):
        inst = hlo.Instruction("c", "f32[4]", "all-reduce", ["x"], attrs)
        return hlo.replica_groups(inst, num_devices=8)
    assert groups("replica_groups={{0,2},{1,3}}, to_apply=%add") == [[0, 2], [1, 3]]
    assert groups("replica_groups={}, to_apply=%add") == [list(range(8))]
    assert groups("replica_groups=[2,4]<=[8], to_apply=%add") == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert groups("replica_groups=[4,2]<=[2,4]T(1,0), to_apply=%add") == [
        [0, 4], [1, 5], [2, 6], [3, 7]]
    assert groups("replica_groups=mesh['axis_0'=2,'axis_1'=1,'axis_2'=4] {'axis_2'}, "
                  "use_global_device_ids=true") == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert groups("replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, x=1") == [
        [0, 4], [1, 5], [2, 6], [3, 7]]
    assert groups("replica_groups=mesh['a'=2,'b'=2], device_ids=([2,2]T(1,0)) {'b'}, x=1") == [
        [0, 2], [1, 3]]
    permute = hlo.Instruction("p", "f32[4]", "collective-permute", ["x"],
                              "source_target_pairs={{0,1},{1,0}}")
    assert hlo.replica_groups(permute, 2) == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match="replica_groups"):
        groups("replica_groups=??, x=1")


def test_dot_as_padded_convolution_counts_real_taps(module):
    # out [8,64,2,8]: batch 64 x features 8; 32 input features; the 2 "head" positions each
    # see one real tap of the size-2 window (the other falls in the padding): 2 taps, not 4.
    conv = module["fused_conv"].by_name["convolution.1"]
    assert counts.convolution_flops(module["fused_conv"], conv) == 2 * 64 * 8 * 32 * 2 * 8


def test_step_counts_scale_the_loop_body(module):
    step = counts.count_step(module, num_devices=4)
    assert step.matmul_flops == 24 * 2 * 64 * 8 * 32 * 2 * 8
    by_kind = step.collective_bytes()
    assert by_kind["all-gather"] == 4 * 128 * 4 * 3            # shard x (N - 1)
    y_bytes = 8 * 64 * 2 * 8 * 2
    assert by_kind["all-reduce"] == pytest.approx(24 * 2 * y_bytes * 1 / 2)   # 2 V (N-1)/N
    assert by_kind["reduce-scatter"] == by_kind["all-to-all"] == 0
    slice_bytes = 32 * 2 * 8 * 2
    # The body's slice fusion reads one layer's weights, not the stacked [24, ...] buffer.
    body = module["body"]
    assert counts._instruction_bytes(module, body, body.by_name["slice"]) == 2 * slice_bytes + 4
    ag = [c for c in step.collectives if c.kind == "all-gather"][0]
    assert ag.groups == ((0, 1, 2, 3),) and ag.calls == 1


def test_not_an_hlo_module():
    with pytest.raises(ValueError, match="ENTRY"):
        hlo.parse_module("HloModule x\n")
