"""The kernels, one module per op family; importing this package registers them all."""

from dojoc.codegen.kernels import (  # noqa: F401  (one module a line, so parallel additions merge)
    attention,
    conv,
    copy,
    eltwise,
    index,
    matmul,
    norm,
    pool,
    reduce,
)
