"""Op by op through torch.export: each small function is lowered, verified, interpreted and compared."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ir_helpers import check_export

g = torch.Generator().manual_seed(0)


def f(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def i64(high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=g)


def boolean(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g) > 0.5


CASES: dict[str, tuple[Callable[..., Any], tuple[torch.Tensor, ...]]] = {
    "arith_scalars": (lambda x: ((x + 2) * 3 - 1) / (x.abs() + 1) - 1.5, (f(3, 4),)),
    "add_alpha_rsub": (lambda x, y: (torch.add(x, y, alpha=2), torch.sub(x, y, alpha=0.5), 1 - x), (f(3), f(3))),
    "int_float_promotion": (lambda i, x: (i + x, i * 2, i / 2, x * i.float()), (i64(9, 4), f(4))),
    "div_modes": (lambda a, b: (torch.div(a, b, rounding_mode="floor"), torch.div(a, b, rounding_mode="trunc"),
                                a // 3), (f(6) * 9, f(6).abs() + 0.5)),
    "int_div_modes": (lambda a: (torch.div(a - 8, 3, rounding_mode="trunc"), (a - 8) // 3, (a - 8) % 3), (i64(16, 7),)),
    "remainder": (lambda x, y: (x % 2.5, torch.remainder(x, y)), (f(6) * 9, f(6).abs() + 0.5)),
    "pow": (lambda x, y: (x ** 2, x.abs() ** 0.5, 2 ** y, torch.pow(x.abs() + 1, y)), (f(5), f(5))),
    "max_min_clamp": (lambda x, y: (torch.maximum(x, y), torch.minimum(x, y), x.clamp(-0.3, 0.4), x.clamp(min=0.1),
                                    x.clamp(max=0.2), torch.clamp(x, y - 1, y + 1)), (f(8), f(8))),
    "compare_logical": (lambda x, y: (((x > 0) & (y < 0.5)) | ~(x == y) ^ (x != 0), x >= y, x <= 0.1,
                                      torch.logical_and(x > 0, y > 0), torch.logical_or(x > 0, y > 0),
                                      torch.logical_xor(x > 0, y > 0), torch.logical_not(x > 0)), (f(6), f(6))),
    "compare_mixed_dtypes": (lambda i, x: (i > x, i == 3, x < i), (i64(5, 6), f(6) * 3)),
    "where_masked_fill": (lambda x, m: (torch.where(m, x, 0.0), torch.where(m, 1.0, x), x.masked_fill(m, -1e4)),
                          (f(3, 4), boolean(3, 4))),
    "unary": (lambda x: (torch.relu(x), torch.sigmoid(x), torch.tanh(x), torch.exp(x), torch.log(x.abs() + 1),
                         torch.sqrt(x.abs()), torch.rsqrt(x.abs() + 1), torch.abs(x), -x, torch.erf(x), F.silu(x),
                         F.gelu(x), F.gelu(x, approximate="tanh"), F.hardtanh(x), F.relu6(x * 4),
                         torch.reciprocal(x.abs() + 1), F.hardswish(x), F.hardsigmoid(x), F.leaky_relu(x, 0.1)),
              (f(4, 5),)),
    "unary_on_ints": (lambda i: (torch.exp(i), torch.sigmoid(i), torch.abs(i - 3), -i), (i64(6, 5),)),
    "reductions": (lambda x: (x.sum(1), x.sum(), x.mean((0, 2), keepdim=True), x.mean(), torch.amax(x, -1),
                              torch.amin(x, (0, 1)), x.max(), x.min(), x.var(1), x.var(2, correction=0, keepdim=True),
                              x.std(0), (x > 0).sum(-1), (x > 0).float().mean(0)), (f(3, 4, 5),)),
    "cumsum": (lambda x: (x.cumsum(1), (x > 0).cumsum(-1), x.cumsum(0)), (f(3, 4),)),
    "softmax": (lambda x: (x.softmax(-1), x.softmax(0), F.log_softmax(x, 1)), (f(3, 4) * 5,)),
    "layer_norm_plain": (lambda x: (F.layer_norm(x, (5,)), F.layer_norm(x, (4, 5), eps=1e-3)), (f(2, 4, 5) + 2,)),
    "views": (lambda x: (x.reshape(6, 4), x.view(-1), x.flatten(1), x.unsqueeze(1).squeeze(), x.permute(2, 0, 1),
                         x.transpose(0, 2), x[0].t(), x[:, None].expand(2, 5, 3, 4), x.narrow(2, 1, 2),
                         x[:, 1], x[..., -1], x[:, 1:3:2], x[:, -2:]), (f(2, 3, 4),)),
    "cat_stack_split": (lambda x, y: (torch.cat([x, y], 1), torch.stack([x, x], 0), *torch.split(x, 2, 1),
                                      *torch.split(y, [1, 2], 1), *x.chunk(2, 0), *x.unbind(1)), (f(2, 5), f(2, 3))),
    "pad": (lambda x: (F.pad(x, (1, 2)), F.pad(x, (1, 1, 2, 0), value=-1.0), F.pad(x, (-1, 1, 0, -1))), (f(2, 3, 4),)),
    "embedding_gather": (lambda w, ids, x, i: (F.embedding(ids, w), torch.gather(x, 1, i), x.index_select(1, i[0])),
                         (f(10, 4), i64(10, 2, 3), f(3, 5), i64(5, 3, 2))),
    "advanced_indexing": (lambda x, i, j: (x[i], x[:, j], x[i[:, None], j], x[-1 - i], x[:, :, j % 3]),
                          (f(5, 6, 3), i64(5, 4), i64(6, 2))),
    "factories": (lambda x: (x + torch.arange(4), x * torch.ones(4), torch.zeros_like(x) + 1,
                             torch.full((2, 4), 0.5) * x, x + torch.tensor([1.0, 2.0, 3.0, 4.0]),
                             torch.arange(3, 9, 2).float()), (f(2, 4),)),
    "matmuls": (lambda a, b, v, c: (a @ b, torch.mm(a, b), torch.bmm(c, c.transpose(1, 2)), v[:3] @ b,
                                    a @ v[:3].unsqueeze(1), b.t() @ v[:3], c @ b,
                                    torch.addmm(v[:4], a[:, :3], b[:, :4], beta=0.5, alpha=2),
                                    torch.baddbmm(c, c, c.transpose(1, 2)[..., :4], alpha=0.5),
                                    torch.einsum("bij,jk->bik", c, b)), (f(3, 3), f(3, 4), f(5), f(2, 3, 3))),
    "conv1d_same": (lambda x, w: (F.conv1d(x, w, padding="same"), F.conv1d(x, w, stride=2)), (f(2, 4, 11), f(6, 4, 3))),
    "pools": (lambda x: (*F.max_pool2d(x, 2, return_indices=True), F.avg_pool2d(x[0], 3, 1, 1),
                         F.adaptive_avg_pool2d(x, (2, 3)), F.max_pool2d(x, 3, 2, ceil_mode=True)), (f(2, 3, 7, 8),)),
    "sdpa_float_mask": (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.5),
                        (f(1, 2, 4, 8), f(1, 2, 6, 8), f(1, 2, 6, 8), f(4, 6))),
    "bf16": (lambda x: ((x.to(torch.bfloat16) * 3).float(), (x.bfloat16() @ x.t().bfloat16()).float()), (f(4, 4),)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op(name: str) -> None:
    fn, args = CASES[name]
    check_export(fn, args, rtol=1e-4, atol=1e-4)
