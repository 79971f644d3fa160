"""The mapping stage's data: where every op runs and every value lives (see model.py), and its reading
and explaining (explain.py)."""

from dojoc.mapping.model import (
    SCHEMA_VERSION,
    Bound,
    Mapping,
    OpMapping,
    Shard,
    ValuePlacement,
    Where,
    format_cores,
    parse_cores,
)
from dojoc.mapping.stages import Pipeline, Stage

__all__ = ["SCHEMA_VERSION", "Bound", "Mapping", "OpMapping", "Shard", "Pipeline", "Stage", "ValuePlacement", "Where",
           "format_cores", "parse_cores"]
