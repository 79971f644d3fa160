"""Graph-to-graph passes of the compiler pipeline (docs/compiler.md): each takes a verified IR graph and
returns a new, verified one, leaving its input unchanged."""
