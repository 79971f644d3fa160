"""The kernels, one module per op family; importing this package registers them all."""

from dojoc.codegen.kernels import copy, eltwise  # noqa: F401
