"""Pipeline stages as data: a batch cut into micro-batches that run through stages side by side.

A `Pipeline` says how many micro-batches a call's batch is cut into (`passes/microbatch.py`) and, per
stage, the first op it runs (ops run in graph order, so a stage runs the ops from its first up to the next
stage's first) and its region: a rectangle of the mesh, every enabled core of it. Stage s runs micro-batch
i while stage s + 1 runs micro-batch i - 1 (codegen/lanes.py). It is part of the `Mapping`, so it is dumped,
explained and given back like any decision; a given mapping's pipeline is taken as it is.
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from typing import Any

from dojoc.errors import MappingError


@dataclass(frozen=True)
class Stage:
    """One stage: the first op it runs (by its name in the graph before the cut), and its rectangle of the
    mesh (first row, first column, rows, columns)."""

    first: str
    rect: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "rect": list(self.rect)}


@dataclass(frozen=True)
class Pipeline:
    """`micro_batches` micro-batches through `stages`, in order; `predicted_cycles` is the cost model's
    estimate of the whole pipeline, and `note` why it was chosen (both reported, not read back)."""

    micro_batches: int
    stages: tuple[Stage, ...]
    predicted_cycles: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"micro_batches": self.micro_batches, "stages": [s.to_dict() for s in self.stages],
                             "predicted_cycles": self.predicted_cycles}
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Pipeline:
        shape = ('write {"micro_batches": 4, "stages": [{"first": "op", "rect": [row, col, rows, cols]}, ...]}')
        if not isinstance(d, AbcMapping):
            raise MappingError(f"pipeline: must be an object; {shape}")
        m, stages = d.get("micro_batches"), d.get("stages")
        if not isinstance(m, int) or isinstance(m, bool) or m < 1 or not isinstance(stages, list) or not stages:
            raise MappingError(f"pipeline: needs an integer micro_batches >= 1 and a non-empty list of stages; {shape}")
        out = []
        for i, s in enumerate(stages):
            rect = s.get("rect") if isinstance(s, AbcMapping) else None
            if (not isinstance(s, AbcMapping) or not isinstance(s.get("first"), str) or not isinstance(rect, list)
                    or len(rect) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) for x in rect)):
                raise MappingError(f"pipeline stage {i}: needs a string first (an op) and a rect of 4 integers; "
                                   f"{shape}")
            out.append(Stage(s["first"], (rect[0], rect[1], rect[2], rect[3])))
        return cls(m, tuple(out), int(d.get("predicted_cycles", 0) or 0), str(d.get("note", "")))
