"""What code generation hands to the runtime: the program and the facts the report needs."""

from __future__ import annotations

from dataclasses import dataclass

from dojoc.codegen.sram import CoreSram
from dojoc.mapping.model import Mapping
from isa.program import Image
from runtime_emu.stats import LOAD_PHASE_BARRIER

LOAD_BARRIER = LOAD_PHASE_BARRIER  # barrier id that ends the one-time loading of resident weights


@dataclass(frozen=True)
class Lowered:
    """A compiled graph.

    `image` runs in two phases: first the one-time loading of resident weights into SRAM, ended by a
    barrier with id LOAD_BARRIER on every core used, then one call (inputs in DRAM -> outputs in DRAM).
    The emulator records when that barrier released, which splits `load_cycles` from `cycles`.
    Input tensors of the image are named as `input_names` (the graph's user inputs, export's flattened
    order); output tensors as `output_names`.
    """

    image: Image
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    flops: int  # 2 x MACs of matmul and convolution at the model's unpadded shapes
    precision: str  # "bf16", "fp32" or "cfp8"
    cores_used: int
    sram_peak_bytes: int  # the planned maximum over cores
    mapping: Mapping | None = None  # every decision of the compile, and every value's placement
    # (op, first, last): the op's code lies between barriers first and last, each (id, how many barriers of
    # that id came before it; the load barrier is (LOAD_BARRIER, 0)), so its emulated cycles are the
    # difference of their release cycles
    op_spans: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = ()
    sram: tuple[CoreSram, ...] = ()  # per core that runs code, the memory plan's bytes by kind
