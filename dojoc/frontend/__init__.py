"""dojoc's frontend: PyTorch programs to IR.

- `export_module(model, example_inputs, example_kwargs)` -> torch.export.ExportedProgram (non-strict);
- `from_exported(ep)` -> Graph, `from_module(model, inputs)` does both;
- `from_aot(gm, example_inputs)` -> Graph, for FX graphs from dynamo, through AOTAutograd;
- `decomposition_table()`: the one table both use; `supported_ops()`: every op with a lowering;
- `fold_constants(graph)`: constant folding.
"""

from dojoc.frontend.aot import from_aot
from dojoc.frontend.convert import Binding, convert
from dojoc.frontend.decompositions import KEPT_OPS, decomposition_table
from dojoc.frontend.export import export_module, from_exported, from_module
from dojoc.frontend.fold import fold_constants
from dojoc.frontend.registry import register, supported_ops

__all__ = [
    "KEPT_OPS", "Binding", "convert", "decomposition_table", "export_module", "fold_constants", "from_aot",
    "from_exported", "from_module", "register", "supported_ops",
]
