"""dojoc's one decomposition table, shared by both frontends (torch.export and AOTAutograd).

It is torch's core-ATen table (`torch.export.default_decompositions()`: the post-autograd Python
decompositions plus the CompositeImplicitAutograd ones) minus `KEPT_OPS`, the ops dojoc lowers whole
because the machine runs them better whole (a fused softmax, layer norm or attention) or because their
decomposition loses structure a pass needs (batch norm to fold into a convolution, linear and matmul
to map onto the matrix unit). Every op that survives the table needs a lowering in
`dojoc.frontend.lowerings`; `dojoc.frontend.supported_ops()` lists them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

aten = torch.ops.aten

#: Ops removed from the table, so they reach the lowerings whole. Some are not in torch's table at all
#: (they are core ATen); they are listed so the policy is in one place.
KEPT_OPS: tuple[Any, ...] = (
    # normalizations and activations lowered whole
    aten.layer_norm.default, aten.native_layer_norm.default,
    aten.softmax.int, aten._softmax.default, aten.log_softmax.int, aten._log_softmax.default,
    aten.gelu.default, aten.silu.default, aten.hardtanh.default,
    aten._native_batch_norm_legit_no_training.default,
    # attention
    aten.scaled_dot_product_attention.default, aten._scaled_dot_product_flash_attention_for_cpu.default,
    # matrix ops: keep linear and matmul whole (their decompositions flatten batch dims through views)
    aten.linear.default, aten.matmul.default,
    # pooling, indexing, scans, reductions
    aten.max_pool2d_with_indices.default, aten.avg_pool2d.default, aten._adaptive_avg_pool2d.default,
    aten.embedding.default, aten.cumsum.default, aten.var.correction,
)


@functools.cache
def _table() -> dict[Any, Callable[..., Any]]:
    table = torch.export.default_decompositions()
    for op in KEPT_OPS:
        if op in table:
            del table[op]
    return dict(table.items())


def decomposition_table() -> dict[Any, Callable[..., Any]]:
    """The table (a fresh dict: op overload -> decomposition), for `ep.run_decompositions` and for
    AOTAutograd's `decompositions=`."""
    return dict(_table())
