"""The kernel registry: which function emits the code of each IR op.

A kernel is `fn(ctx, node) -> None`: it reads its inputs' DRAM views from `ctx.views`, writes the
output views that the driver allocated (`ctx.views[node.outputs[i]]`), and emits code on the cores it
chooses (`ctx.core(c)`), using only `ctx.sram[c]` scratch and resident memory. The driver puts a barrier
after every op.
"""

from __future__ import annotations

from collections.abc import Callable

from dojoc.ir.ops import Op

if False:  # typing only, without an import cycle
    from dojoc.codegen.context import Ctx
    from dojoc.ir.graph import Node

Kernel = Callable[["Ctx", "Node"], None]
KERNELS: dict[Op, Kernel] = {}


def kernel(*ops: Op) -> Callable[[Kernel], Kernel]:
    """Register a kernel for one or more ops."""

    def deco(fn: Kernel) -> Kernel:
        for op in ops:
            if op in KERNELS:
                raise AssertionError(f"two kernels for {op}")
            KERNELS[op] = fn
        return fn

    return deco
