"""dojoc's IR: typed tensors, one closed enum of ops with tabled semantics, graphs, the verifier, a
numpy interpreter and a printer. It does not import torch; `dojoc.frontend` builds graphs from torch.
"""

from dojoc.ir.graph import Graph, Node, Value
from dojoc.ir.interpreter import Interpreter, evaluate, interpret
from dojoc.ir.ops import Attr, Attrs, Op, OpDef, OpKind
from dojoc.ir.printer import format_graph, format_node, maybe_dump
from dojoc.ir.table import OP_TABLE, op_def
from dojoc.ir.types import IRDType, TensorType
from dojoc.ir.verify import verify

__all__ = [
    "Attr", "Attrs", "Graph", "IRDType", "Interpreter", "Node", "OP_TABLE", "Op", "OpDef", "OpKind",
    "TensorType", "Value", "evaluate", "format_graph", "format_node", "interpret", "maybe_dump", "op_def",
    "verify",
]
