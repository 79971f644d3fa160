"""The dojoc emulator: cores, SRAM, DMA and DRAM, the network on chip, semaphores, cycles, traps, statistics.

    from runtime_emu import Emulator, run
    result = run(image, {"a": a, "b": b})          # RunResult(cycles, stats, outputs, trace)
"""

from runtime_emu.emulator import Emulator, RunResult, run
from runtime_emu.errors import ImageError, InputError
from runtime_emu.traps import Trap, TrapKind

__all__ = ["Emulator", "RunResult", "run", "Trap", "TrapKind", "InputError", "ImageError"]
