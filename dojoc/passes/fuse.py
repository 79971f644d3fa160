"""fuse: the elementwise ops after a matmul, conv2d or elementwise arithmetic op become its epilogue.

From each such *producer*, in graph order, the pass follows its result while the result has exactly one
reader and is not a graph output, and takes the reader into the producer's `epilogue` attribute
(dojoc/ir/epilogue.py) when it is one of:

- the add of a constant vector along the last dim (a linear layer's bias: a parameter [N], or a
  reshape/expand of one), after a matmul: step `bias`, the vector as an extra input;
- the add of a tensor of the result's type (a residual: ResNet's shortcut, BERT's residual), after a
  matmul or conv2d: step `residual`, the tensor as an extra input. When that tensor is itself the result
  of a later matrix op that the add alone reads, the add is left to that op, so no op moves;
- the subtraction of such a tensor from the result (x - y, x the result): step `sub_residual`;
- an add, sub (x - c), mul or div (x / c) by a scalar constant: step `add` / `sub` / `mul` / `div`;
- a clamp (clamp, hardtanh, relu6, clamp_min, clamp_max): step `clamp` with its two bounds;
- an activation (relu, gelu, silu, sigmoid, tanh): step `act`;
- a layer norm over the last dim with constant weight and bias (BERT's LayerNorm after the residual
  add), after a matmul: step `layer_norm`, its weight and bias vectors [N] as extra inputs. It ends the
  chain (the kernels normalise whole rows, then convert and store), and a row longer than a matrix
  tile (4,095 columns) does not fuse.

The result may pass through a reshape that nothing else reads (elementwise steps commute with it; a bias
only when the reshape keeps the last dim). The fused node keeps the producer's name and output value; its
extra inputs follow its own; the reshapes it went through become one reshape after it; it takes the
producer's place in the graph, or the last fused op's place when an extra input is defined after the
producer. Fused nodes leave the graph; their names stay in the node's `fused` attribute.

Every candidate op (an add, sub, mul, div, clamp or activation on floats) left in the graph gets a note in
`graph.fusion_notes` saying why it was not fused ("its input %x has 2 readers", "its input %x is a graph
output", ...); code generation copies the notes into the mapping (`OpMapping.note`, `--explain`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from dojoc.ir import Graph, Node, Op, Value, maybe_dump, verify
from dojoc.ir.epilogue import NORM, RESIDUAL_STEPS, Step, steps_of
from dojoc.passes.consts import constant
from isa.table import COLS

MATRIX = (Op.MATMUL, Op.CONV2D)
ELEMENTWISE = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAXIMUM, Op.MINIMUM)
ACTS = {Op.RELU: "relu", Op.SILU: "silu", Op.SIGMOID: "sigmoid", Op.TANH: "tanh"}
MAX_COLS = (1 << COLS) - 1  # the longest row of a matrix tile (the mma's n field)
CANDIDATES = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.CLAMP, Op.GELU, Op.LAYER_NORM, *ACTS)


@dataclass(frozen=True)
class Link:
    """One fused op: the node, the chain value it reads, its step, and its extra operands (a bias vector,
    a residual tensor, a layer norm's weight and bias, as the graph has them), each with its values [N]
    when it is a constant vector along the last dim (else None)."""

    node: Node
    src: Value
    step: Step
    extras: tuple[tuple[Value, np.ndarray | None], ...] = ()


@dataclass(frozen=True)
class Chain:
    """A producer and the ops fused into it, with the reshapes passed through on the way."""

    producer: Node
    links: tuple[Link, ...]
    reshapes: tuple[Node, ...]


class _Defer(Exception):
    """The residual add belongs to the later matrix op that produces its other operand."""


@dataclass
class _Scan:
    """What one pass over the graph needs: readers, producers, outputs, positions, and the notes so far."""

    g: Graph
    notes: dict[str, str]

    def __post_init__(self) -> None:
        self.users = self.g.users()
        self.producers = self.g.producers()
        self.outputs = set(self.g.outputs)
        self.order = {n: i for i, n in enumerate(self.g.nodes)}


def fuse(graph: Graph) -> Graph:
    """A new graph with epilogues fused into their producers and `fusion_notes` for the ops left."""
    g = graph.copy()
    notes: dict[str, str] = {}
    done: set[str] = set()
    fused_names: list[str] = []
    renamed: dict[str, str] = {}  # value name -> the value that replaced it (notes name values as they end)
    while True:
        s = _Scan(g, notes)
        chain = None
        for n in g.nodes:
            if n.name in done or not _producer(n):
                continue
            done.add(n.name)
            chain = _chain(s, n)
            if chain is not None:
                break
        if chain is None:
            break
        fused_names += [lk.node.name for lk in chain.links]
        old, new = _rewrite(g, s, chain)
        renamed[old.name] = new.name
    g.eliminate_dead_code()
    for name in fused_names:  # the fused ops' names stay taken: the mapping still lists them
        g.insert_name(name)
    s = _Scan(g, notes)
    for n in g.nodes:
        if n.op in CANDIDATES and n.output.type.dtype.is_float and n.name not in notes:
            notes[n.name] = _unreached(s, n)
    g.fusion_notes = {n.name: _rename(notes[n.name], renamed) for n in g.nodes if n.name in notes}
    maybe_dump(g, "fuse")
    return verify(g)


def _producer(n: Node) -> bool:
    """Whether n's kernel can take an epilogue (and has none yet)."""
    return (n.op in MATRIX or n.op in ELEMENTWISE) and len(n.outputs) == 1 and n.output.type.dtype.is_float \
        and not steps_of(n.attrs)


def _note_readers(s: _Scan, v: Value, why: str) -> None:
    for r in dict.fromkeys(s.users.get(v, [])):
        if r.op in CANDIDATES:
            s.notes.setdefault(r.name, why)


def _next(s: _Scan, v: Value) -> tuple[Node, Node | None] | None:
    """The one reader of v (seen through a reshape that nothing else reads) and that reshape; None, with
    notes on the readers, when v has several readers or is a graph output."""
    nxt = _sole_reader(s, v, f"%{v.name}")
    if nxt is None or nxt.op is not Op.RESHAPE:
        return (nxt, None) if nxt is not None else None
    after = _sole_reader(s, nxt.output, f"%{nxt.output.name} (a reshape of %{v.name})")
    return (after, nxt) if after is not None else None


def _sole_reader(s: _Scan, v: Value, what: str) -> Node | None:
    """The one reader of v, or None (noting why on its readers) when it is a graph output or has several."""
    readers = s.users.get(v, [])
    if v in s.outputs:
        _note_readers(s, v, f"its input {what} is a graph output")
        return None
    if len(readers) != 1:
        _note_readers(s, v, f"its input {what} has {len(readers)} readers")
        return None
    return readers[0]


def _chain(s: _Scan, p: Node) -> Chain | None:
    """The longest chain of ops that fuse into producer p (None when none does)."""
    links: list[Link] = []
    reshapes: list[Node] = []
    cur = p.output
    while True:
        nxt = _next(s, cur)
        if nxt is None:
            break
        reader, reshape = nxt
        if reader.op not in CANDIDATES or steps_of(reader.attrs):  # not a step, or a fused producer itself
            break
        src = reshape.output if reshape is not None else cur
        try:
            link = _link(s, p, reader, src, links)
        except _Defer:
            break
        if isinstance(link, str):
            s.notes.setdefault(reader.name, link)
            break
        links.append(link)
        if reshape is not None:
            reshapes.append(reshape)
        cur = reader.output
        if link.step[0] == NORM:  # the kernels store right after normalising
            break
    return Chain(p, tuple(links), tuple(reshapes)) if links else None


def _link(s: _Scan, p: Node, n: Node, src: Value, links: list[Link]) -> Link | str:
    """n (which reads the chain value src) as the next step of p's epilogue, or why it cannot be."""
    if n.output.type != src.type:
        return f"its result {n.output.type} is larger than its input %{src.name} {src.type}"
    if n.op in ACTS:
        return Link(n, src, ("act", ACTS[n.op]))
    if n.op is Op.GELU:
        return Link(n, src, ("act", "gelu_tanh" if n.attrs["approximate"] == "tanh" else "gelu"))
    if n.op is Op.CLAMP:
        return Link(n, src, ("clamp", n.attrs["min"], n.attrs["max"]))
    if n.op is Op.LAYER_NORM:
        return _norm_link(s, p, n, src)
    x, y = n.inputs
    other = y if x is src else x
    if n.op is Op.DIV and x is not src:
        return f"it divides by %{src.name}, which is not a scaling"
    if n.op is Op.SUB and x is not src:
        return f"it subtracts %{src.name} from %{other.name}; only x - y with x the result is a step"
    if n.op in (Op.MUL, Op.DIV):
        if n.op is Op.DIV and n.attrs["rounding_mode"] is not None:
            return "a rounding division is not a scaling"
        c = _scalar(s, other)
        if c is None:
            return f"its other operand %{other.name} {other.type} is not a scalar constant"
        return Link(n, src, (n.op.value, c))
    # an add or sub: a bias (add only, so that it stays one before a scalar), a scalar or a residual
    kinds = {lk.step[0] for lk in links}
    if n.op is Op.ADD and p.op is Op.MATMUL and "bias" not in kinds \
            and src.type.shape[-1:] == p.output.type.shape[-1:]:
        vec = _col_bias(s, other, src)
        if vec is not None:
            return Link(n, src, ("bias",), ((other, vec),))
    c = _scalar(s, other)
    if c is not None:
        return Link(n, src, (n.op.value, c))
    if p.op not in MATRIX:
        return "the epilogue of an elementwise op adds no tensor (a bias or residual fuses into matmul or conv2d)"
    if other.type != src.type:
        if _constant(s, other) is not None:
            return (f"the constant %{other.name} {other.type} is neither a vector along the last dim (a bias of a "
                    f"matmul) nor of the result's type {src.type}")
        return f"its other operand %{other.name} {other.type} broadcasts; a residual must be {src.type}"
    if kinds & set(RESIDUAL_STEPS):
        return "the epilogue already adds a residual"
    if n.op is Op.SUB:  # x - y with y from a later matrix op: fusing into that op would need y - x
        return Link(n, src, ("sub_residual",), ((other, None),))
    q = s.producers.get(other)
    if q is not None and s.order[q] > s.order[p] and _takes_residual(s, q, n):
        raise _Defer
    return Link(n, src, ("residual",), ((other, None),))


def _norm_link(s: _Scan, p: Node, n: Node, src: Value) -> Link | str:
    """A layer norm reading the chain value src as p's last step, or why it cannot be."""
    if p.op is not Op.MATMUL:
        return f"a layer norm fuses into a matmul, not a {p.op}"
    if n.inputs[0] is not src:
        return f"it normalises %{n.inputs[0].name}, not %{src.name}"
    width = src.type.shape[-1] if src.type.shape else 0
    if n.attrs["normalized_ndim"] != 1 or src.type.shape[-1:] != p.output.type.shape[-1:]:
        return "it normalises more than the matmul's last dim (only a layer norm over N fuses)"
    if width > MAX_COLS:
        return f"its rows of {width} elements are longer than a matrix tile ({MAX_COLS} columns)"
    extras = []
    for what, v in zip(("weight", "bias"), n.inputs[1:], strict=True):
        vec = _col_bias(s, v, src)
        if vec is None:
            return f"its {what} %{v.name} {v.type} is not a constant vector of the result's type"
        extras.append((v, vec))
    return Link(n, src, (NORM, float(n.attrs["eps"])), tuple(extras))


def _takes_residual(s: _Scan, q: Node, add: Node) -> bool:
    """Whether matrix op q, defined after the producer, will fuse `add` itself (its result reaches the add
    directly or through one reshape, with no other reader), so that fusing into q moves no op."""
    if q.op not in MATRIX or not _producer(q) or q.output in s.outputs:
        return False
    readers = s.users.get(q.output, [])
    if len(readers) != 1:
        return False
    r = readers[0]
    if r.op is Op.RESHAPE and r.output not in s.outputs and len(s.users.get(r.output, [])) == 1:
        r = s.users[r.output][0]
    return r is add


def _constant(s: _Scan, v: Value) -> np.ndarray | None:
    """The value of v when a parameter or constant defines it (possibly reshaped or expanded)."""
    return constant(s.g, s.producers, v)


def _scalar(s: _Scan, v: Value) -> float | None:
    """The one value of a floating constant of one element (at its dtype's precision), else None."""
    arr = _constant(s, v)
    if arr is None or arr.size != 1 or not v.type.dtype.is_float:
        return None
    return float(np.asarray(arr, dtype=np.float32).reshape(()))


def _col_bias(s: _Scan, other: Value, src: Value) -> np.ndarray | None:
    """The vector [N] when `other` is a floating constant that broadcasts along the last dim of src
    ([..., N]) only; else None."""
    shape, n = tuple(other.type.shape), src.type.shape[-1]
    if not shape or len(shape) > len(src.type.shape) or any(d != 1 for d in shape[:-1]) or shape[-1] != n:
        return None
    arr = _constant(s, other)
    if arr is None or not other.type.dtype.is_float or other.type.dtype != src.type.dtype:
        return None
    return np.ascontiguousarray(arr.reshape(n))


def _rename(note: str, renamed: dict[str, str]) -> str:
    """The note with each %value that a rewrite replaced named by its replacement."""

    def final(m: re.Match[str]) -> str:
        name = m.group(1)
        while name in renamed:
            name = renamed[name]
        return f"%{name}"

    return re.sub(r"%([A-Za-z0-9_.]+)", final, note)


def _rewrite(g: Graph, s: _Scan, chain: Chain) -> tuple[Value, Value]:
    """Replace the producer and its fused ops by one node carrying the epilogue (and one reshape after it
    when the chain went through reshapes); returns (the chain's last value, the value that replaces it)."""
    p = chain.producer
    shape = p.output.type.shape
    extras: list[Value] = []
    before: list[Node] = []  # new nodes that define extra inputs: right before the fused node
    moved: list[Node] = []  # parameters defined after the producer: moved to right before the fused node
    late = False  # a computed extra input is defined after the producer: the node goes where its last step was
    for lk in chain.links:
        for i, (extra, vec) in enumerate(lk.extras):
            q = s.producers.get(extra)
            after = q is not None and s.order[q] > s.order[p]
            if vec is not None:  # a vector [N]: the parameter itself, or a new one with its values
                if q is not None and q.op is Op.PARAM and extra.type.shape == (shape[-1],):
                    extras.append(extra)
                    moved += [q] if after and q not in moved else []
                    continue
                suffix = "bias" if lk.step[0] == "bias" else ("weight", "bias")[i]
                extras.append(g.param(f"{lk.node.name}.{suffix}", vec, source=lk.node.source))
            elif extra.type.shape == shape:
                extras.append(extra)
                late |= after
                continue
            else:
                late |= after  # a residual of the chain's shape: seen in the producer's shape
                extras.append(g.call(Op.RESHAPE, extra, name=f"{extra.name}_as_{p.name}", source=lk.node.source,
                                     shape=shape))
            before.append(g.nodes.pop())  # g.param and g.call append at the end
    steps = tuple(lk.step for lk in chain.links)
    names = tuple(lk.node.name for lk in chain.links)
    node = Node(p.name, p.op, p.inputs + tuple(extras), p.attrs.replace(epilogue=steps, fused=names), p.outputs,
                p.source)
    tail = chain.reshapes[-1].with_inputs([p.output]) if chain.reshapes else None
    last = chain.links[-1].node
    gone = {p, *(lk.node for lk in chain.links), *chain.reshapes, *moved}
    at = last if late else p
    nodes: list[Node] = []
    for n in g.nodes:
        if n is at:
            nodes += [*moved, *before, node, *([tail] if tail is not None else [])]
        if n not in gone:
            nodes.append(n)
    g.nodes = nodes
    result = tail.output if tail is not None else p.output
    g.replace_uses({last.output: result})
    return last.output, result


def _unreached(s: _Scan, n: Node) -> str:
    """Why candidate n fused into nothing, when no chain stopped at it: where its input comes from."""
    for v in n.inputs:
        q = s.producers.get(v)
        shown = f"%{v.name}"
        if q is not None and q.op is Op.RESHAPE:
            v, q = q.inputs[0], s.producers.get(q.inputs[0])
            shown = f"%{v.name} (through a reshape)"
        if q is None or _constant(s, v) is not None:  # a constant operand is not where the input comes from
            continue
        if q.op is Op.INPUT:
            return f"its input {shown} is a graph input"
        if q.op in MATRIX or q.op in ELEMENTWISE:
            if q.op in ELEMENTWISE and n.op in (Op.ADD, Op.SUB):
                return f"its input {shown} comes from an elementwise {q.op}, whose epilogue adds no tensor"
            return f"its input {shown} comes from a {q.op} that could not take it"
        return f"its input {shown} comes from {q.op}, which takes no epilogue"
    return "its inputs are constants"
