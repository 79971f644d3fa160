"""Markdown of the op table, for docs/ir.md: `python -m dojoc.ir.docgen` prints it.

docs/ir.md holds the same text between its BEGIN/END markers; a test keeps the two equal.
"""

from __future__ import annotations

from dojoc.ir.ops import REQUIRED, OpKind, format_attr
from dojoc.ir.table import OP_TABLE

BEGIN = "<!-- BEGIN OP TABLE (python -m dojoc.ir.docgen) -->"
END = "<!-- END OP TABLE -->"


def op_table_markdown() -> str:
    """One markdown table per op category: op, inputs, attributes (with defaults), meaning."""
    out = [BEGIN]
    for kind in OpKind:
        rows = [d for d in OP_TABLE.values() if d.kind == kind]
        out += ["", f"### {kind.value}", "", "| op | inputs | attributes | types | semantics |",
                "|---|---|---|---|---|"]
        for d in rows:
            lo, hi = d.arity
            ins = ", ".join(d.inputs[:hi] if hi is not None else d.inputs) or "-"
            if hi is not None and lo < hi:
                ins += f" ({lo}..{hi})"
            attrs = ", ".join(f"{k}: {a.type}" + ("" if a.default is REQUIRED else f" = {format_attr(a.default)}")
                              for k, a in d.attrs.items()) or "-"
            outs = "" if d.num_outputs == 1 else f" ({d.num_outputs} outputs)"
            types = (d.shape.__doc__ or "").strip()
            out.append(f"| `{d.op.value}` | {ins} | {_esc(attrs)} | {_esc(types)} | {_esc(d.doc)}{outs} |")
    out += ["", END]
    return "\n".join(out)


def _esc(text: str) -> str:
    return text.replace("|", "&#124;")


if __name__ == "__main__":
    print(op_table_markdown())
