"""Lowerings of the ATen ops that survive dojoc's decomposition table, one module per family.

Importing this package registers them all (see `dojoc.frontend.registry`).
"""

from dojoc.frontend.lowerings import elementwise, linalg, nn, shape, tensors  # noqa: F401
