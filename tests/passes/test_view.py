"""DRAM views and DMA splitting: every view and transfer is checked against numpy on real bytes."""

import numpy as np
import pytest

from dojoc.codegen.view import MAX_COUNT, MAX_DIMS, View, transfers
from isa.dtypes import DType


def gather(mem: np.ndarray, v: View) -> np.ndarray:
    """Read a view out of a byte array, element by element (the slow, obvious reference)."""
    out = np.empty(v.shape, dtype=np.float32)
    for idx in np.ndindex(*v.shape):
        a = v.base + sum(i * s for i, s in zip(idx, v.strides, strict=True))
        out[idx] = mem[a:a + 4].view(np.float32)[0]
    return out


@pytest.fixture
def mem() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    return x, np.frombuffer(x.tobytes(), dtype=np.uint8)


def test_view_ops_match_numpy(mem) -> None:
    x, raw = mem
    v = View.dense(0, x.shape, DType.F32)
    assert v.is_dense()
    np.testing.assert_array_equal(gather(raw, v.permute((3, 1, 0, 2))), x.transpose(3, 1, 0, 2))
    np.testing.assert_array_equal(gather(raw, v.slice(3, 1, 5, 2)), x[..., 1:5:2])
    np.testing.assert_array_equal(gather(raw, v.select(1, 2)), x[:, 2])
    e = View.dense(0, (1, 5), DType.F32).expand((3, 4, 5))
    np.testing.assert_array_equal(gather(raw, e), np.broadcast_to(x.reshape(-1)[:5], (3, 4, 5)))


@pytest.mark.parametrize("shape", [(6, 20), (2, 3, 20), (120,), (2, 1, 60), (1, 2, 3, 4, 5)])
def test_reshape_of_dense(mem, shape) -> None:
    x, raw = mem
    r = View.dense(0, x.shape, DType.F32).reshape(shape)
    assert r is not None
    np.testing.assert_array_equal(gather(raw, r), x.reshape(shape))


def test_reshape_of_permuted_is_refused_or_right(mem) -> None:
    x, raw = mem
    p = View.dense(0, x.shape, DType.F32).permute((0, 1, 3, 2))  # (2, 3, 5, 4)
    assert p.reshape((6, 20)) is None  # the last two dims are not contiguous
    ok = p.reshape((6, 5, 4))
    assert ok is not None
    np.testing.assert_array_equal(gather(raw, ok), x.transpose(0, 1, 3, 2).reshape(6, 5, 4))


def run_transfers(src: np.ndarray, dst: np.ndarray, ts) -> None:
    for t in ts:
        assert len(t.dims) <= MAX_DIMS and all(c <= MAX_COUNT for c, _, _ in t.dims)
        for idx in np.ndindex(*[c for c, _, _ in t.dims]):
            s = t.src + sum(i * ss for i, (_, ss, _) in zip(idx, t.dims, strict=True))
            d = t.dst + sum(i * dd for i, (_, _, dd) in zip(idx, t.dims, strict=True))
            dst[d:d + t.esize] = src[s:s + t.esize]


def test_transfers_split_rank_and_merge(mem) -> None:
    x, raw = mem
    v = View.dense(0, x.shape, DType.F32).permute((3, 2, 1, 0))
    dense = View.dense(0, v.shape, DType.F32)
    # a six-dim copy (adding two unit dims) of a fully transposed view
    dims = [(1, 0, 0), *[(n, s, d) for n, s, d in zip(v.shape, v.strides, dense.strides, strict=True)], (1, 4, 4)]
    out = np.zeros_like(raw)
    ts = transfers(v.base, 0, dims, 4)
    run_transfers(raw, out, ts)
    np.testing.assert_array_equal(out.view(np.float32).reshape(v.shape), x.transpose(3, 2, 1, 0))
    # a contiguous copy becomes one wide-element transfer
    (t,) = transfers(0, 0, [(120, 4, 4)], 4)
    assert t.esize == 8 and t.dims == ((60, 8, 8),)


def test_transfers_split_long_counts() -> None:
    n = 3 * MAX_COUNT + 7  # not factorable into two counts below the limit after widening
    src = np.arange(n, dtype=np.uint8)
    dst = np.zeros(n, dtype=np.uint8)
    ts = transfers(0, 0, [(n, 1, 1)], 1)
    run_transfers(src, dst, ts)
    np.testing.assert_array_equal(src, dst)
    ts2 = transfers(0, 0, [(n, 3, 1)], 1)  # strided source cannot widen
    assert all(c <= MAX_COUNT for t in ts2 for c, _, _ in t.dims)
