"""The closed set of IR ops, their categories and the attribute schema.

`Op` is the one enum of the IR (tinygrad style). What each op means lives in tables: its attributes
here (`OpDef.attrs`), its shape rule in `dojoc.ir.shapes`, its numpy reference in
`dojoc.ir.reference`; `dojoc.ir.table.OP_TABLE` joins them, one row per op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dojoc.ir.types import IRDType


class OpKind(Enum):
    """Op categories. The `Interpreter` has one overridable method per category."""

    SOURCE = "source"            # input, param, const
    UNARY = "unary"              # elementwise, one input
    BINARY = "binary"            # elementwise, two inputs, numpy broadcasting
    TERNARY = "ternary"          # where
    CONTRACTION = "contraction"  # matmul, conv2d
    REDUCTION = "reduction"      # sum, mean, amax, amin, var, cumsum
    NORMALIZATION = "normalization"  # softmax, log_softmax, layer_norm, batch_norm
    ATTENTION = "attention"      # scaled dot-product attention
    POOLING = "pooling"          # max/avg/adaptive-avg pooling
    INDEXING = "indexing"        # embedding, gather, index_select
    MOVEMENT = "movement"        # reshape, permute, expand, slice, select, cat, pad


class Op(Enum):
    """Every IR op. Values are the printer's names."""

    # sources
    INPUT = "input"
    PARAM = "param"
    CONST = "const"
    # unary elementwise
    RELU = "relu"
    GELU = "gelu"
    SILU = "silu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    CLAMP = "clamp"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    ABS = "abs"
    NEG = "neg"
    ERF = "erf"
    LOGICAL_NOT = "logical_not"
    CAST = "cast"
    # binary elementwise
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    LOGICAL_AND = "logical_and"
    LOGICAL_OR = "logical_or"
    LOGICAL_XOR = "logical_xor"
    # ternary
    WHERE = "where"
    # contractions
    MATMUL = "matmul"
    CONV2D = "conv2d"
    # reductions and scans
    SUM = "sum"
    MEAN = "mean"
    AMAX = "amax"
    AMIN = "amin"
    VAR = "var"
    CUMSUM = "cumsum"
    # normalizations
    SOFTMAX = "softmax"
    LOG_SOFTMAX = "log_softmax"
    LAYER_NORM = "layer_norm"
    BATCH_NORM = "batch_norm"
    # attention
    SDPA = "sdpa"
    # pooling
    MAX_POOL2D = "max_pool2d"
    AVG_POOL2D = "avg_pool2d"
    ADAPTIVE_AVG_POOL2D = "adaptive_avg_pool2d"
    # indexing
    EMBEDDING = "embedding"
    GATHER = "gather"
    INDEX_SELECT = "index_select"
    # data movement (the view family)
    RESHAPE = "reshape"
    PERMUTE = "permute"
    EXPAND = "expand"
    SLICE = "slice"
    SELECT = "select"
    CAT = "cat"
    PAD = "pad"

    def __str__(self) -> str:
        return self.value


# -- attribute schema -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttrType:
    """One attribute's type: a name for messages and a predicate on values."""

    name: str
    check: Callable[[Any], bool]

    def __repr__(self) -> str:
        return self.name


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _ints(n: int | None = None) -> AttrType:
    return AttrType(f"tuple[int{', ...' if n is None else ' x ' + str(n)}]",
                    lambda v: isinstance(v, tuple) and all(map(_is_int, v)) and (n is None or len(v) == n))


INT = AttrType("int", _is_int)
BOOL = AttrType("bool", lambda v: isinstance(v, bool))
FLOAT = AttrType("float", _is_num)
OPT_FLOAT = AttrType("float | None", lambda v: v is None or _is_num(v))
OPT_INT = AttrType("int | None", lambda v: v is None or _is_int(v))
STR = AttrType("str", lambda v: isinstance(v, str))
INTS = _ints()
INTS2 = _ints(2)
DTYPE = AttrType("IRDType", lambda v: isinstance(v, IRDType))
OPT_DTYPE = AttrType("IRDType | None", lambda v: v is None or isinstance(v, IRDType))
SCALAR = AttrType("bool | int | float", lambda v: isinstance(v, bool | int | float))


def choice(*options: Any) -> AttrType:
    """An attribute restricted to a few values."""
    return AttrType(" | ".join(map(repr, options)), lambda v: v in options)


REQUIRED: Any = object()  # marks an attribute with no default


@dataclass(frozen=True)
class Attr:
    """Schema of one attribute: its type and its default (REQUIRED when it has none)."""

    type: AttrType
    default: Any = REQUIRED


class Attrs(Mapping[str, Any]):
    """An immutable, hashable attribute mapping. Lists are stored as tuples; keys keep schema order."""

    __slots__ = ("_items", "_dict")

    def __init__(self, items: Mapping[str, Any] | None = None, **kw: Any) -> None:
        d = {k: _freeze(v) for k, v in {**(items or {}), **kw}.items()}
        self._dict = d
        self._items = tuple(d.items())

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def replace(self, **kw: Any) -> Attrs:
        """A copy with some attributes changed."""
        return Attrs({**self._dict, **kw})

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}={format_attr(v)}" for k, v in self._items) + "}"


def _freeze(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    return v


def format_attr(v: Any) -> str:
    """How the printer shows an attribute value."""
    if isinstance(v, tuple):
        return "(" + ",".join(format_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, IRDType):
        return v.value
    if isinstance(v, float) and not math.isfinite(v):
        return {math.inf: "inf", -math.inf: "-inf"}.get(v, "nan")
    return repr(v)


# -- the row type of the op table -------------------------------------------------------------------

ShapeRule = Callable[..., Any]   # (list[TensorType], Attrs) -> tuple[TensorType, ...]
Reference = Callable[..., Any]   # (list[np.ndarray], Attrs) -> np.ndarray | tuple[np.ndarray, ...]


@dataclass(frozen=True)
class OpDef:
    """One row of the op table.

    arity is (min, max) inputs (max None: variadic). `shape` computes the output types from the
    input types and attributes, raising ShapeError; `ref` is the numpy reference, which receives
    float inputs as float32 (bf16 is widened) and whose results the interpreter casts to the
    output types.
    """

    op: Op
    kind: OpKind
    arity: tuple[int, int | None]
    attrs: Mapping[str, Attr]
    shape: ShapeRule
    ref: Reference
    doc: str
    num_outputs: int = 1
    inputs: tuple[str, ...] = field(default=())  # input names, for docs and messages

    def normalize_attrs(self, given: Mapping[str, Any] | None) -> Attrs:
        """Fill defaults in schema order; unknown or missing attributes are left for `verify` to report."""
        given = dict(given or {})
        out: dict[str, Any] = {}
        for name, spec in self.attrs.items():
            if name in given:
                out[name] = given.pop(name)
            elif spec.default is not REQUIRED:
                out[name] = spec.default
        out.update(given)  # unknown keys: kept so the verifier names them
        return Attrs(out)

    def check_attrs(self, attrs: Mapping[str, Any]) -> str | None:
        """None when the attributes match the schema, else what is wrong."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            schema = ", ".join(f"{k}: {v.type}" for k, v in self.attrs.items()) or "none"
            return f"unknown attribute(s) {sorted(unknown)} (schema: {schema})"
        for name, spec in self.attrs.items():
            if name not in attrs:
                return f"missing attribute {name!r} ({spec.type})"
            if not spec.type.check(attrs[name]):
                return f"attribute {name}={attrs[name]!r} is not {spec.type}"
        return None
