"""What `dojoc compile` reads: a TARGET (`path/file.py:factory` or a `.pt2` file) and input SPECs.

SPEC: `[name=]SHAPE[:DTYPE][RANGE]` or `[name=]file.npy`.
- SHAPE: sizes joined by `x` (`1x3x224x224`), or `scalar` for a 0-d tensor;
- DTYPE: float32 (default), bfloat16, int64, int32, bool (also f32, bf16, i64, i32, float, long, int);
- RANGE: `[lo,hi)` (or `[lo,hi]`, `(lo,hi)`, ...): integers drawn uniformly from it, floats uniform in it;
  without one, floats are standard normal, integers in [0, 10), bools fair coins;
- `file.npy`: a numpy array (no pickles); float64 arrays become float32 (dojoc has no float64).
Random values come from a generator seeded with 0, so runs repeat. A named SPEC is a keyword argument,
the others are positional, in order.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dojoc.errors import DojocError, InputError

DTYPES = {
    "float32": torch.float32, "float": torch.float32, "f32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "int64": torch.int64, "long": torch.int64, "i64": torch.int64,
    "int32": torch.int32, "int": torch.int32, "i32": torch.int32,
    "bool": torch.bool,
}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SPEC = re.compile(rf"^(?P<shape>\d+(?:x\d+)*|scalar)(?::(?P<dtype>[A-Za-z0-9]+))?"
                   rf"(?:(?P<lb>[\[(])\s*(?P<lo>{_NUM})\s*,\s*(?P<hi>{_NUM})\s*(?P<rb>[\])]))?$")
_NAME = re.compile(r"^(?P<name>[A-Za-z_]\w*)=(?P<body>.+)$")
MAX_INPUT_BYTES = 4 << 30  # a random input larger than this is a typo, not a model input
SPEC_HELP = ("expected [name=]SHAPE[:DTYPE][RANGE] such as 1x3x224x224, 1x128:int64[0,30522) or 1x3:float32, "
             "or [name=]x.npy")


def parse_inputs(specs: Sequence[str], seed: int = 0) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(positional tensors, keyword tensors) from SPECs; InputError for a malformed one."""
    gen = torch.Generator().manual_seed(seed)
    args: list[torch.Tensor] = []
    kwargs: dict[str, torch.Tensor] = {}
    for spec in specs:
        m = _NAME.match(spec.strip())
        name, body = (m["name"], m["body"]) if m else (None, spec.strip())
        x = _make(body, spec, gen)
        if name is None:
            if kwargs:
                raise InputError(f"--input {spec}: positional inputs must come before named ones")
            args.append(x)
        elif name in kwargs:
            raise InputError(f"--input {spec}: input {name!r} given twice")
        else:
            kwargs[name] = x
    return tuple(args), kwargs


def _make(body: str, spec: str, gen: torch.Generator) -> torch.Tensor:
    if body.endswith(".npy"):
        path = Path(body)
        if not path.is_file():
            raise InputError(f"--input {spec}: file {path} not found")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"--input {spec}: {path} is not a .npy array ({e})") from None
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        try:
            return torch.from_numpy(np.ascontiguousarray(arr))
        except TypeError as e:
            raise InputError(f"--input {spec}: unsupported array type {arr.dtype} ({e})") from None
    m = _SPEC.match(body.replace(" ", ""))
    if not m:
        raise InputError(f"--input {spec}: malformed input spec; {SPEC_HELP}")
    shape = () if m["shape"] == "scalar" else tuple(int(s) for s in m["shape"].split("x"))
    dtype_name = (m["dtype"] or "float32").lower()
    if dtype_name not in DTYPES:
        raise InputError(f"--input {spec}: unknown dtype {m['dtype']!r}; use one of "
                         "float32, bfloat16, int64, int32, bool")
    dtype = DTYPES[dtype_name]
    # Refused before anything is allocated. An empty tensor holds nothing, but torch still computes its
    # strides from the other sizes (and overflows int64 on absurd ones), so the sizes bound is on those.
    span = math.prod(max(d, 1) for d in shape)
    nbytes = span * dtype.itemsize
    if nbytes > MAX_INPUT_BYTES:
        what = f"{span:,} elements" if span == math.prod(shape) else f"sizes (ignoring the zero) of {span:,} elements"
        raise InputError(f"--input {spec}: {what} ({nbytes / 2**30:,.1f} GiB) are more than an input may hold "
                         f"here ({MAX_INPUT_BYTES // 2**30} GiB); give a smaller shape")
    if m["lo"] is None:
        if dtype.is_floating_point:
            return torch.randn(shape, generator=gen).to(dtype)
        if dtype == torch.bool:
            return torch.randint(0, 2, shape, generator=gen).bool()
        return torch.randint(0, 10, shape, generator=gen, dtype=dtype)
    lo, hi = float(m["lo"]), float(m["hi"])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"--input {spec}: the range's bounds must be finite numbers")
    if dtype.is_floating_point:
        if not lo < hi:
            raise InputError(f"--input {spec}: empty range")
        return (torch.rand(shape, generator=gen) * (hi - lo) + lo).to(dtype)
    ilo = math.floor(lo) + 1 if m["lb"] == "(" else math.ceil(lo)
    ihi = math.floor(hi) + 1 if m["rb"] == "]" else math.ceil(hi)
    if dtype == torch.bool:
        ilo, ihi = max(ilo, 0), min(ihi, 2)
    else:
        info = torch.iinfo(dtype)
        if ilo < info.min or ihi - 1 > info.max:
            raise InputError(f"--input {spec}: the range does not fit {dtype_name} ({info.min}..{info.max})")
    if not ilo < ihi:
        raise InputError(f"--input {spec}: the range holds no integer{' in 0..1' if dtype == torch.bool else ''}")
    if dtype == torch.bool:
        return torch.randint(ilo, ihi, shape, generator=gen).bool()
    return torch.randint(ilo, ihi, shape, generator=gen, dtype=dtype)


# -- targets ---------------------------------------------------------------------------------------

def load_target(target: str) -> tuple[Any, tuple[Any, ...] | None, dict[str, Any]]:
    """(model, example args or None, example kwargs) from `path/file.py:factory` or a `.pt2` file.

    The factory returns an nn.Module, or `(module, example_inputs)`, or `(module, args, kwargs)`.
    Anything wrong with the file is a DojocError."""
    if target.endswith(".pt2"):
        return _load_pt2(Path(target))
    file, sep, factory = target.rpartition(":")
    if not sep or not file.endswith(".py") or not factory.isidentifier():
        raise DojocError(f"target {target!r}: expected path/file.py:factory or a .pt2 file")
    path = Path(file)
    if not path.is_file():
        raise DojocError(f"target file {path} not found")
    module = _import_file(path)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise DojocError(f"{path} has no callable {factory!r}")
    try:
        result = fn()
    except Exception as e:
        raise DojocError(f"{path}:{factory}() failed: {type(e).__name__}: {e}") from e
    if isinstance(result, tuple) and len(result) in (2, 3) and callable(result[0]):
        args = result[1]
        kwargs = dict(result[2] or {}) if len(result) == 3 else {}
        if isinstance(args, dict):
            return result[0], (), {**args, **kwargs}
        return result[0], (tuple(args) if isinstance(args, list | tuple) else (args,)), kwargs
    if isinstance(result, torch.nn.Module):
        return result, None, {}
    raise DojocError(f"{path}:{factory}() returned a {type(result).__name__}: return an nn.Module or "
                     "(module, example_inputs)")


def _import_file(path: Path) -> Any:
    name = "_dojoc_target_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DojocError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    saved = sys.dont_write_bytecode, list(sys.path)
    sys.dont_write_bytecode = True  # leave nothing behind (no __pycache__)
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        raise DojocError(f"cannot load {path}: {type(e).__name__}: {e}") from e
    finally:
        sys.dont_write_bytecode, sys.path[:] = saved[0], saved[1]
    return module


def _load_pt2(path: Path) -> tuple[Any, tuple[Any, ...] | None, dict[str, Any]]:
    if not path.is_file():
        raise DojocError(f"target file {path} not found")
    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.CRITICAL)  # torch logs a traceback before raising; the error says it
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise DojocError(f"cannot load {path} with torch.export.load: {type(e).__name__}: {e}") from e
    finally:
        log.setLevel(level)
    example = getattr(ep, "example_inputs", None)
    if example is not None:
        args, kwargs = example
        return ep, tuple(args), dict(kwargs)
    return ep, None, {}


def random_inputs_for(ep: torch.export.ExportedProgram, seed: int = 0) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Random tensors shaped like an ExportedProgram's user inputs (its in_spec gives the structure)."""
    from torch.export.graph_signature import InputKind
    from torch.utils import _pytree as pytree

    gen = torch.Generator().manual_seed(seed)
    names = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    leaves = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            val = node.meta.get("val")
            if not isinstance(val, torch.Tensor):
                raise InputError(f"{node.name} is not a tensor input: pass --input for every input")
            shape = tuple(int(s) for s in val.shape)
            if val.dtype.is_floating_point:
                leaves.append(torch.randn(shape, generator=gen).to(val.dtype))
            elif val.dtype == torch.bool:
                leaves.append(torch.randint(0, 2, shape, generator=gen).bool())
            else:
                leaves.append(torch.randint(0, 10, shape, generator=gen, dtype=val.dtype))
    args, kwargs = pytree.tree_unflatten(leaves, ep.call_spec.in_spec)
    return tuple(args), dict(kwargs)
