"""A reader for compiled HLO text (``compiled.as_text()``): computations, instructions, shapes.

Enough of the HLO text grammar to walk a partitioned train step: computations (``ENTRY`` and
the ones called by ``while``, ``fusion``, ``call``, ``conditional``), each instruction's name,
result type, opcode, operand names and attribute text. The counters built on it
(``protlm.aot.counts``) need shapes, called computations, replica groups and loop trip counts.

Shapes are read without their layouts: ``bf16[8,64,32]{1,2,0:T(8,128)(2,1)}`` is 8*64*32
bfloat16 elements; the tile padding of TPU layouts is not counted.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator

import numpy as np

DTYPE_BYTES = {
    "pred": 1, "s2": 1, "u2": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1,
    "f8e5m2": 1, "f8e4m3b11fnuz": 1, "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "f8e4m3": 1, "f8e3m4": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
    "f64": 8, "c64": 8, "c128": 16, "token": 0,
}
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_NAME_REF = re.compile(r"%([\w.\-]+)")


@dataclasses.dataclass(frozen=True)
class Array:
    """One array of a (possibly tuple) HLO type: element type and dimensions."""

    dtype: str
    dims: tuple[int, ...]

    @property
    def bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) * DTYPE_BYTES.get(self.dtype, 4)


def parse_type(text: str) -> tuple[Array, ...]:
    """The arrays of an HLO type string, tuples flattened in order (``()`` gives none).

    ``(s32[], bf16[8,64]{1,0:T(8,128)})`` -> ``(Array('s32', ()), Array('bf16', (8, 64)))``.
    Layouts (``{...}``) are dropped first: their ``T(8,128)`` tiles are not dimensions.
    """
    depth, kept = 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            kept.append(ch)
    out = []
    for dtype, dims in _ARRAY.findall("".join(kept)):
        if dtype not in DTYPE_BYTES:
            continue
        sizes = tuple(int(d.lstrip("<=")) for d in dims.split(",") if d.strip())
        out.append(Array(dtype, sizes))
    return tuple(out)


@dataclasses.dataclass
class Instruction:
    """One HLO instruction: ``name = type opcode(operands), attrs``."""

    name: str
    type_text: str
    opcode: str
    operands: list[str]
    attrs: str
    is_root: bool = False
    operand_text: str = ""     # raw text inside the parentheses (constant / parameter values)

    @functools.cached_property
    def arrays(self) -> tuple[Array, ...]:
        return parse_type(self.type_text)

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.arrays)

    def attr(self, key: str) -> str | None:
        """The raw text of attribute ``key`` (balanced braces/brackets), or None."""
        m = re.search(r"(?:^|[\s,])" + re.escape(key) + r"=", self.attrs)
        if not m:
            return None
        return _balanced_prefix(self.attrs[m.end():])

    def called(self, key: str) -> list[str]:
        """Names of the computations an attribute refers to (``calls=%f``, ``body=%b``, ...)."""
        value = self.attr(key)
        return _NAME_REF.findall(value) if value else []


@dataclasses.dataclass
class Computation:
    name: str
    instructions: list[Instruction]
    is_entry: bool = False

    @functools.cached_property
    def by_name(self) -> dict[str, Instruction]:
        return {i.name: i for i in self.instructions}

    @property
    def root(self) -> Instruction:
        for inst in self.instructions:
            if inst.is_root:
                return inst
        return self.instructions[-1]


@dataclasses.dataclass
class Module:
    computations: dict[str, Computation]
    entry: str

    def __getitem__(self, name: str) -> Computation:
        return self.computations[name]


def _balanced_prefix(text: str) -> str:
    """The leading attribute value of ``text``: up to the first top-level comma."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if quoted:
            quoted = ch != '"' or text[i - 1] == "\\"
        elif ch == '"':
            quoted = True
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth < 0:
                return text[:i]
        elif ch == "," and depth == 0:
            return text[:i]
    return text


def _split_type(rest: str) -> tuple[str, str]:
    """Splits ``TYPE opcode(...)...`` after ``name = `` into (type text, remainder)."""
    if rest.startswith("("):      # tuple type: up to its matching ')' outside layout braces
        paren = brace = 0
        for i, ch in enumerate(rest):
            if ch == "{":
                brace += 1
            elif ch == "}":
                brace -= 1
            elif brace == 0 and ch == "(":
                paren += 1
            elif brace == 0 and ch == ")":
                paren -= 1
                if paren == 0:
                    return rest[:i + 1], rest[i + 1:].lstrip()
        raise ValueError(f"unbalanced tuple type in HLO: {rest[:200]!r}")
    brace = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            brace += 1
        elif ch == "}":
            brace -= 1
        elif ch == " " and brace == 0:
            return rest[:i], rest[i + 1:].lstrip()
    return rest, ""


def _parse_instruction(line: str) -> Instruction | None:
    m = _INSTR.match(line)
    if not m:
        return None
    type_text, rest = _split_type(line[m.end():])
    op = re.match(r"([\w\-]+)\(", rest)
    if not op:
        return None
    depth, start = 0, op.end() - 1
    for i in range(start, len(rest)):
        ch = rest[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                break
    operand_text, attrs = rest[start + 1:i], rest[i + 1:].lstrip(", ")
    return Instruction(name=m.group(2), type_text=type_text, opcode=op.group(1),
                       operands=_NAME_REF.findall(operand_text), attrs=attrs,
                       is_root=bool(m.group(1)), operand_text=operand_text)


def parse_module(text: str) -> Module:
    """Parses ``compiled.as_text()`` (one HLO module).

    Raises:
      ValueError: when the text has no ENTRY computation (not an HLO module dump).
    """
    computations, entry, current = {}, None, None
    for line in text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = Computation(name=m.group(2), instructions=[], is_entry=bool(m.group(1)))
                if current.is_entry:
                    entry = current.name
            continue
        if line.strip() == "}":
            computations[current.name] = current
            current = None
            continue
        inst = _parse_instruction(line)
        if inst is not None:
            current.instructions.append(inst)
    if entry is None:
        raise ValueError("not an HLO module: no ENTRY computation found (pass compiled.as_text())")
    return Module(computations=computations, entry=entry)


# ----------------------------------------------------------------------------- replica groups
def _iota_ids(text: str) -> np.ndarray:
    """``[G,S]<=[d0,d1,..]T(p..)`` -> iota over ``d`` transposed by ``p``, reshaped to ``[G, S]``;
    ``[a,b]T(p..)`` -> iota over ``[a, b]`` transposed by ``p``."""
    m = re.fullmatch(r"\[([\d,]+)\](?:<=\[([\d,]+)\])?(?:T\(([\d,]+)\))?", text.strip())
    if not m:
        raise ValueError(f"unrecognised iota device list {text!r}")
    shape = [int(x) for x in m.group(1).split(",")]
    dims = [int(x) for x in (m.group(2) or m.group(1)).split(",")]
    ids = np.arange(int(np.prod(dims))).reshape(dims)
    if m.group(3):
        ids = ids.transpose([int(x) for x in m.group(3).split(",")])
    return ids.reshape(shape) if m.group(2) else ids


def replica_groups(inst: Instruction, num_devices: int) -> list[list[int]]:
    """Device-id groups of a collective, in any of XLA's three printed forms.

    ``{{0,1},{2,3}}`` (explicit; ``{}`` = all devices), ``[2,2]<=[4]`` (iota, optionally
    transposed) and ``mesh['a'=2,'b'=2] {'b'}`` (groups along the named axes, device order
    from ``device_ids=(...)`` when given). ``collective-permute`` has ``source_target_pairs``
    instead: each pair is returned as a group of two.
    """
    pairs = inst.attr("source_target_pairs")
    if pairs is not None:
        return [[int(a), int(b)] for a, b in re.findall(r"\{(\d+),(\d+)\}", pairs)]
    text = inst.attr("replica_groups")
    if text is None or text.strip() in ("{}", ""):
        return [list(range(num_devices))]
    text = text.strip()
    if text.startswith("{"):
        return [[int(x) for x in g.split(",") if x.strip()]
                for g in re.findall(r"\{([\d,\s]*)\}", text[1:-1])]
    if text.startswith("["):
        return _iota_ids(text).tolist()
    if text.startswith("mesh"):
        return _mesh_groups(inst, text)
    raise ValueError(f"{inst.name}: unrecognised replica_groups {text[:200]!r}")


_MESH_GROUPS = re.compile(
    r"replica_groups=mesh\[(?P<axes>[^\]]*)\]"
    r"(?:,\s*device_ids=\((?P<ids>[^()]*(?:\([^()]*\))?[^()]*)\))?\s*\{(?P<reduced>[^}]*)\}")


def _mesh_groups(inst: Instruction, text: str) -> list[list[int]]:
    """``mesh['axis_0'=2,'axis_1'=2] {'axis_1'}``: groups vary along the braced axes; device
    order from ``device_ids=(...)`` when given, else row-major ids."""
    m = _MESH_GROUPS.search(inst.attrs)
    if not m:
        raise ValueError(f"{inst.name}: unrecognised mesh replica_groups {text[:200]!r}")
    axes = re.findall(r"'([^']+)'=(\d+)", m.group("axes"))
    names, sizes = [a for a, _ in axes], [int(s) for _, s in axes]
    reduced = re.findall(r"'([^']+)'", m.group("reduced"))
    unknown = set(reduced) - set(names)
    if unknown:   # e.g. sub-axis syntax 'a':(1)2, not produced for the meshes protlm builds
        raise ValueError(f"{inst.name}: replica_groups name axes {sorted(unknown)} outside "
                         f"the mesh {names}")
    order = np.arange(int(np.prod(sizes)))
    if m.group("ids"):
        body = m.group("ids").strip()
        order = (_iota_ids(body).reshape(-1) if body.startswith("[")
                 else np.asarray([int(x) for x in body.split(",")]))
    grid = order.reshape(sizes)
    keep = [i for i, n in enumerate(names) if n in reduced]
    other = [i for i in range(len(names)) if i not in keep]
    group_size = int(np.prod([sizes[i] for i in keep])) if keep else 1
    return grid.transpose(other + keep).reshape(-1, group_size).tolist()


# ----------------------------------------------------------------------------- loops
def _resolve_constant(comp: Computation, name: str) -> int | None:
    """Integer value of ``name`` when it is a scalar constant (through copies/converts)."""
    seen = 0
    while name in comp.by_name and seen < 16:
        inst = comp.by_name[name]
        if inst.opcode == "constant":
            m = re.fullmatch(r"\s*(-?\d+)\s*", inst.operand_text)
            return int(m.group(1)) if m else None
        if inst.opcode in ("copy", "convert", "bitcast") and inst.operands:
            name, seen = inst.operands[0], seen + 1
            continue
        return None
    return None


def trip_count(module: Module, comp: Computation, while_inst: Instruction) -> int | None:
    """Iterations of a ``while``: XLA's ``known_trip_count`` when printed, else read from the
    condition ``i < N`` (or ``N > i``) on a tuple counter whose initial value is a constant
    (default 0, as in every ``lax.scan``/``fori_loop``). None when neither applies.
    """
    known = re.search(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"', while_inst.attrs)
    if known:
        return int(known.group(1))
    cond_names = while_inst.called("condition")
    if not cond_names or cond_names[0] not in module.computations:
        return None
    cond = module[cond_names[0]]
    compare, scope = cond.root, cond
    if compare.opcode == "fusion":            # the compare may sit inside a fused computation
        fused = compare.called("calls")
        if fused and fused[0] in module.computations:
            scope = module[fused[0]]
            compare = scope.root
    if compare.opcode != "compare" or len(compare.operands) != 2:
        return None
    direction = re.search(r"direction=(\w+)", compare.attrs)
    direction = direction.group(1) if direction else ""

    def side(name):
        """('counter', tuple index) or ('const', value) for one compare operand."""
        inst = scope.by_name.get(name)
        if inst is None:
            return None
        if inst.opcode == "constant":
            return ("const", _resolve_constant(scope, name))
        if inst.opcode == "get-tuple-element":
            idx = re.search(r"index=(\d+)", inst.attrs)
            return ("counter", int(idx.group(1))) if idx else None
        if inst.opcode == "parameter" and scope is not cond:   # fused: map back to the operand
            pidx = re.fullmatch(r"\s*(\d+)\s*", inst.operand_text)
            n = int(pidx.group(1)) if pidx else None
            outer = cond.root
            if n is not None and n < len(outer.operands):
                o = cond.by_name.get(outer.operands[n])
                if o is not None and o.opcode == "constant":
                    return ("const", _resolve_constant(cond, o.name))
                if o is not None and o.opcode == "get-tuple-element":
                    idx = re.search(r"index=(\d+)", o.attrs)
                    return ("counter", int(idx.group(1))) if idx else None
        return None

    a, b = side(compare.operands[0]), side(compare.operands[1])
    if not a or not b:
        return None
    if a[0] == "const" and b[0] == "counter":
        a, b = b, a
        direction = {"GT": "LT", "GE": "LE", "LT": "GT", "LE": "GE"}.get(direction, direction)
    if a[0] != "counter" or b[0] != "const" or b[1] is None:
        return None
    init = 0
    if while_inst.operands and while_inst.operands[0] in comp.by_name:
        tup = comp.by_name[while_inst.operands[0]]
        if tup.opcode == "tuple" and a[1] < len(tup.operands):
            value = _resolve_constant(comp, tup.operands[a[1]])
            init = 0 if value is None else value
    if direction == "LT":
        return max(0, b[1] - init)
    if direction == "LE":
        return max(0, b[1] - init + 1)
    if direction == "NE":
        return abs(b[1] - init)
    return None


def walk(module: Module) -> Iterator[tuple[Computation, Instruction, float, bool]]:
    """Every instruction reachable from ENTRY with its execution count per step.

    Yields ``(computation, instruction, multiplier, fused)``: the multiplier is the product of
    the trip counts of the enclosing ``while`` loops; ``fused`` is True inside fusion (and
    reduction) computations, whose instructions never touch HBM on their own. Loops whose
    trip count cannot be read count once and are listed by ``unknown_loops``.
    """
    def visit(name, mult, fused, depth):
        if depth > 64 or name not in module.computations:
            return
        comp = module[name]
        for inst in comp.instructions:
            yield comp, inst, mult, fused
            if inst.opcode == "while":
                n = trip_count(module, comp, inst)
                n = 1 if n is None else n
                for body in inst.called("body"):
                    yield from visit(body, mult * n, fused, depth + 1)
                for cond in inst.called("condition"):
                    yield from visit(cond, mult * (n + 1), fused, depth + 1)
            elif inst.opcode in ("fusion",):
                for sub in inst.called("calls"):
                    yield from visit(sub, mult, True, depth + 1)
            elif inst.opcode in ("call", "async-start"):
                for sub in inst.called("calls") or inst.called("to_apply"):
                    yield from visit(sub, mult, fused, depth + 1)
            elif inst.opcode == "conditional":
                for sub in inst.called("branch_computations"):
                    yield from visit(sub, mult, fused, depth + 1)
    yield from visit(module.entry, 1.0, False, 0)


def unknown_loops(module: Module) -> list[str]:
    """Names of the ``while`` instructions whose trip count could not be determined."""
    return [inst.name for comp, inst, _, _ in walk(module)
            if inst.opcode == "while" and trip_count(module, comp, inst) is None]
