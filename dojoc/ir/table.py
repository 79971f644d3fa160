"""The op table: one row per `Op` with its category, arity, attribute schema, shape rule and reference.

Adding an op is adding a member to `Op`, a row here (a shape rule in `shapes.py`, a reference in
`reference.py` if no existing one fits) and a lowering in `dojoc.frontend.lowerings`; docs/ir.md has
the walk-through. `op_def(op)` is the lookup everything else uses.
"""

from __future__ import annotations

from collections.abc import Mapping

from dojoc.ir import epilogue as E
from dojoc.ir import reference as R
from dojoc.ir import shapes as S
from dojoc.ir.ops import (
    BOOL,
    DTYPE,
    FLOAT,
    INT,
    INTS,
    INTS2,
    OPT_DTYPE,
    OPT_FLOAT,
    OPT_INT,
    SCALAR,
    STR,
    Attr,
    Op,
    OpDef,
    OpKind,
    Reference,
    ShapeRule,
    choice,
)

K = OpKind
OP_TABLE: dict[Op, OpDef] = {}


def _row(op: Op, kind: OpKind, arity: tuple[int, int | None], shape: ShapeRule, ref: Reference, doc: str,
         attrs: Mapping[str, Attr] | None = None, inputs: tuple[str, ...] = (), num_outputs: int = 1) -> None:
    assert op not in OP_TABLE, op
    OP_TABLE[op] = OpDef(op, kind, arity, dict(attrs or {}), shape, ref, doc, num_outputs, inputs)


def _none(xs: object, a: object) -> None:
    raise AssertionError("sources are evaluated by the Interpreter")


# -- sources ----------------------------------------------------------------------------------------
_SRC = {"name": Attr(STR), "shape": Attr(INTS), "dtype": Attr(DTYPE)}
_row(Op.INPUT, K.SOURCE, (0, 0), S.source, _none, "a user input; flat_index is its position among "
     "the pytree-flattened (args, kwargs)", {**_SRC, "flat_index": Attr(INT)})
_row(Op.PARAM, K.SOURCE, (0, 0), S.source, _none, "a parameter, buffer or folded constant: "
     "graph.parameters[name]", _SRC)
_row(Op.CONST, K.SOURCE, (0, 0), S.const, R.const, "a scalar (shape ()) of the given dtype; broadcast "
     "it with expand or by an elementwise op", {"value": Attr(SCALAR), "dtype": Attr(DTYPE)})

# -- elementwise ------------------------------------------------------------------------------------
_X = ("x",)
for _op, _rule, _doc in [
    (Op.RELU, S.unary_numeric, "max(x, 0)"),
    (Op.SILU, S.unary_float, "x * sigmoid(x)"),
    (Op.SIGMOID, S.unary_float, "1 / (1 + exp(-x))"),
    (Op.TANH, S.unary_float, "tanh(x)"),
    (Op.EXP, S.unary_float, "e ** x"),
    (Op.LOG, S.unary_float, "natural log (log(0) = -inf, log(<0) = nan)"),
    (Op.SQRT, S.unary_float, "sqrt(x)"),
    (Op.ABS, S.unary_numeric, "|x|"),
    (Op.NEG, S.unary_numeric, "-x"),
    (Op.ERF, S.unary_float, "the error function"),
    (Op.LOGICAL_NOT, S.unary_bool, "not x (bool)"),
]:
    _row(_op, K.UNARY, (1, 1), _rule, R.unary(_op.value), _doc, inputs=_X)
_row(Op.RSQRT, K.UNARY, (1, 1), S.unary_float, R.rsqrt, "1 / sqrt(x)", inputs=_X)
_row(Op.GELU, K.UNARY, (1, 1), S.unary_float, R.gelu, "x * Phi(x) (approximate='none', erf form) or "
     "0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) ('tanh')", {"approximate": Attr(choice("none", "tanh"), "none")},
     _X)
_row(Op.CLAMP, K.UNARY, (1, 1), S.unary_numeric, R.clamp, "min(max(x, min), max); a bound of None is "
     "absent (hardtanh, relu6, clamp_min/max)", {"min": Attr(OPT_FLOAT, None), "max": Attr(OPT_FLOAT, None)}, _X)
_row(Op.CAST, K.UNARY, (1, 1), S.cast, R.cast, "convert to dtype: float->int truncates toward zero, "
     "->bool is x != 0, ->bf16 rounds to nearest even", {"dtype": Attr(DTYPE)}, _X)

_XY = ("x", "y")
# the elementwise arithmetic ops whose kernel applies an epilogue (dojoc.ir.epilogue) to its result tile
_ELT_RULE = E.with_epilogue(S.binary_arith, (2, 2), E.ELEMENTWISE_STEPS)
for _op, _rule, _doc, _attrs in [
    (Op.ADD, _ELT_RULE, "x + y, then its epilogue", E.ATTRS),
    (Op.SUB, _ELT_RULE, "x - y, then its epilogue", E.ATTRS),
    (Op.MUL, _ELT_RULE, "x * y, then its epilogue", E.ATTRS),
    (Op.MAXIMUM, _ELT_RULE, "elementwise max (nan propagates), then its epilogue", E.ATTRS),
    (Op.MINIMUM, _ELT_RULE, "elementwise min (nan propagates), then its epilogue", E.ATTRS),
]:
    _row(_op, K.BINARY, (2, 2), _rule, R.binary(_op.value), _doc, _attrs, _XY)
for _op, _rule, _doc in [
    (Op.POW, S.binary_arith, "x ** y"),
    (Op.EQ, S.compare, "x == y -> bool"),
    (Op.NE, S.compare, "x != y -> bool"),
    (Op.LT, S.compare, "x < y -> bool"),
    (Op.LE, S.compare, "x <= y -> bool"),
    (Op.GT, S.compare, "x > y -> bool"),
    (Op.GE, S.compare, "x >= y -> bool"),
    (Op.LOGICAL_AND, S.logical, "x and y (bool)"),
    (Op.LOGICAL_OR, S.logical, "x or y (bool)"),
    (Op.LOGICAL_XOR, S.logical, "x xor y (bool)"),
]:
    _row(_op, K.BINARY, (2, 2), _rule, R.binary(_op.value), _doc, inputs=_XY)
_row(Op.DIV, K.BINARY, (2, 2), E.with_epilogue(S.div, (2, 2), E.ELEMENTWISE_STEPS), R.binary("div"),
     "x / y; rounding_mode None (true division, float operands), 'trunc' or 'floor'; then its epilogue",
     {"rounding_mode": Attr(choice(None, "trunc", "floor"), None), **E.ATTRS}, _XY)
_row(Op.WHERE, K.TERNARY, (3, 3), S.where, R.where, "cond ? x : y, broadcast", inputs=("cond", "x", "y"))

# -- contractions -----------------------------------------------------------------------------------
_row(Op.MATMUL, K.CONTRACTION, (2, 6), E.with_epilogue(S.matmul, (2, 2), E.MATMUL_STEPS), R.matmul,
     "[..., M, K] @ [..., K, N] -> [..., M, N]; batch dims broadcast; out_dtype None means the operands' dtype "
     "(accumulation is fp32 or wider); then its epilogue (bias, residual, scalar arithmetic, clamp, "
     "activation)",
     {"out_dtype": Attr(OPT_DTYPE, None), **E.ATTRS, "merged": Attr(E.NAMES, ())}, ("x", "w", "*epilogue"))
_row(Op.CONV2D, K.CONTRACTION, (2, 4), E.with_epilogue(S.conv2d, (2, 3), E.CONV_STEPS), R.conv2d,
     "cross-correlation of x [N,C,H,W] with w [O,C/groups,KH,KW] plus optional bias [O]; symmetric zero "
     "padding (asymmetric: pad first); depthwise is groups == C; conv1d is conv2d with H = 1; then its "
     "epilogue (residual, scalar arithmetic, clamp, activation)",
     {"stride": Attr(INTS2, (1, 1)), "padding": Attr(INTS2, (0, 0)), "dilation": Attr(INTS2, (1, 1)),
      "groups": Attr(INT, 1), "out_dtype": Attr(OPT_DTYPE, None), **E.ATTRS}, ("x", "w", "bias", "*epilogue"))

# -- reductions -------------------------------------------------------------------------------------
_RED = {"dims": Attr(INTS), "keepdim": Attr(BOOL, False)}
_row(Op.SUM, K.REDUCTION, (1, 1), S.reduce, R.reduction("sum"), "sum over dims", _RED, _X)
_row(Op.MEAN, K.REDUCTION, (1, 1), S.reduce_float, R.reduction("mean"), "mean over dims", _RED, _X)
_row(Op.AMAX, K.REDUCTION, (1, 1), S.reduce, R.reduction("amax"), "max over dims", _RED, _X)
_row(Op.AMIN, K.REDUCTION, (1, 1), S.reduce, R.reduction("amin"), "min over dims", _RED, _X)
_row(Op.VAR, K.REDUCTION, (1, 1), S.reduce_float, R.reduction("var"), "sum((x - mean)^2) / (N - "
     "correction) over dims", {**_RED, "correction": Attr(FLOAT, 1.0)}, _X)
_row(Op.CUMSUM, K.REDUCTION, (1, 1), S.cumsum, R.cumsum, "inclusive prefix sum along dim", {"dim": Attr(INT)},
     _X)

# -- normalizations ---------------------------------------------------------------------------------
_row(Op.SOFTMAX, K.NORMALIZATION, (1, 1), S.softmax, R.softmax, "exp(x - max) / sum(exp(x - max)) along dim",
     {"dim": Attr(INT)}, _X)
_row(Op.LOG_SOFTMAX, K.NORMALIZATION, (1, 1), S.softmax, R.log_softmax, "x - max - log(sum(exp(x - max)))",
     {"dim": Attr(INT)}, _X)
_row(Op.LAYER_NORM, K.NORMALIZATION, (3, 3), S.layer_norm, R.layer_norm, "(x - mean) / sqrt(var + eps) "
     "* weight + bias over the last normalized_ndim dims (biased variance)",
     {"normalized_ndim": Attr(INT, 1), "eps": Attr(FLOAT, 1e-5)}, ("x", "weight", "bias"))
_row(Op.BATCH_NORM, K.NORMALIZATION, (5, 5), S.batch_norm, R.batch_norm, "inference batch norm over "
     "channel dim 1: (x - mean) / sqrt(var + eps) * weight + bias (a later pass folds it into conv2d)",
     {"eps": Attr(FLOAT, 1e-5)}, ("x", "weight", "bias", "running_mean", "running_var"))

# -- attention --------------------------------------------------------------------------------------
_row(Op.SDPA, K.ATTENTION, (3, 4), S.sdpa, R.sdpa,
     "softmax(q k^T * scale + mask) v; mask bool (True attends) or additive; causal keeps the lower triangle "
     "(top-left aligned); a query whose keys are all masked gets zeros (torch's safe softmax); scale None is "
     "1/sqrt(E); enable_gqa repeats k/v heads (dim -3)",
     {"causal": Attr(BOOL, False), "scale": Attr(OPT_FLOAT, None), "enable_gqa": Attr(BOOL, False)},
     ("q", "k", "v", "mask"))

# -- pooling ----------------------------------------------------------------------------------------
_POOL = {"kernel": Attr(INTS2), "stride": Attr(INTS2), "padding": Attr(INTS2, (0, 0)),
         "ceil_mode": Attr(BOOL, False)}
_row(Op.MAX_POOL2D, K.POOLING, (1, 1), S.max_pool2d, R.max_pool2d, "max over windows of x [N,C,H,W] "
     "padded with -inf; outputs the values and i64 indices (flat h*W + w within each plane, first max)",
     {**_POOL, "dilation": Attr(INTS2, (1, 1))}, _X, num_outputs=2)
_row(Op.AVG_POOL2D, K.POOLING, (1, 1), S.avg_pool2d, R.avg_pool2d, "mean over windows; count_include_pad "
     "counts zero padding in the divisor; divisor_override replaces it",
     {**_POOL, "count_include_pad": Attr(BOOL, True), "divisor_override": Attr(OPT_INT, None)}, _X)
_row(Op.ADAPTIVE_AVG_POOL2D, K.POOLING, (1, 1), S.adaptive_avg_pool2d, R.adaptive_avg_pool2d,
     "mean over windows [floor(i*H/OH), ceil((i+1)*H/OH)) to reach output_size",
     {"output_size": Attr(INTS2)}, _X)

# -- indexing ---------------------------------------------------------------------------------------
_row(Op.EMBEDDING, K.INDEXING, (2, 2), S.embedding, R.embedding, "weight[indices]: rows of weight [V, D] "
     "-> indices.shape + [D]", inputs=("weight", "indices"))
_row(Op.GATHER, K.INDEXING, (2, 2), S.gather, R.gather, "out[i][j] = x[index[i][j]][j] (dim 0), as "
     "torch.gather", {"dim": Attr(INT)}, ("x", "index"))
_row(Op.INDEX_SELECT, K.INDEXING, (2, 2), S.index_select, R.index_select, "take entries index (1-D) "
     "along dim", {"dim": Attr(INT)}, ("x", "index"))

# -- data movement ----------------------------------------------------------------------------------
_row(Op.RESHAPE, K.MOVEMENT, (1, 1), S.reshape, R.reshape, "row-major reshape to an explicit shape "
     "(view, squeeze, unsqueeze, flatten)", {"shape": Attr(INTS)}, _X)
_row(Op.PERMUTE, K.MOVEMENT, (1, 1), S.permute, R.permute, "out.shape[i] = x.shape[perm[i]] (transpose, t)",
     {"perm": Attr(INTS)}, _X)
_row(Op.EXPAND, K.MOVEMENT, (1, 1), S.expand, R.expand, "broadcast size-1 dims and add leading dims "
     "(explicit sizes)", {"shape": Attr(INTS)}, _X)
_row(Op.SLICE, K.MOVEMENT, (1, 1), S.slice_, R.slice_, "x[start:end:step] along dim, normalized: "
     "0 <= start <= end <= size, step >= 1 (split is several slices)",
     {"dim": Attr(INT), "start": Attr(INT), "end": Attr(INT), "step": Attr(INT, 1)}, _X)
_row(Op.SELECT, K.MOVEMENT, (1, 1), S.select, R.select, "x[index] along dim, dropping the dim",
     {"dim": Attr(INT), "index": Attr(INT)}, _X)
_row(Op.CAT, K.MOVEMENT, (1, None), S.cat, R.cat, "concatenate along dim", {"dim": Attr(INT)}, ("*xs",))
_row(Op.PAD, K.MOVEMENT, (1, 1), S.pad, R.pad, "constant padding; pads = (lo0, hi0, lo1, hi1, ...) in dim "
     "order (not torch's reversed order), all >= 0 (negative pads are slices)",
     {"pads": Attr(INTS), "value": Attr(SCALAR, 0.0)}, _X)

assert set(OP_TABLE) == set(Op), set(Op) - set(OP_TABLE)


def op_def(op: Op) -> OpDef:
    """The table row of an op."""
    return OP_TABLE[op]
