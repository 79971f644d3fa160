"""Scalar handlers: nop, halt, li, rdsr, the ALU (register and immediate forms), branches, jmp, loop.

Registers hold 64-bit two's-complement integers; r0 reads as zero and writes to it are dropped (an
instruction whose destination is r0 becomes a no-op at pre-decode). Division truncates toward zero and
traps (BAD_OPERAND) on a zero divisor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isa.table import ALU, Instr
from runtime_emu.core import HALTED, MASK64, SCALAR_UNIT, Core, Handler, wrap64
from runtime_emu.memory import Fault
from runtime_emu.traps import TrapKind

if TYPE_CHECKING:
    from runtime_emu.emulator import Emulator

_LO, _HI = -(1 << 63), 1 << 63
_SIGN = 1 << 63


def _nop(core: Core, ops: Any, pc: int, t: int) -> int:
    return pc + 1


def _halt(core: Core, cost: int, pc: int, t: int) -> int:
    core.state = HALTED
    core.pc = pc
    core.time = core.halted_at = t + cost
    core.busy[SCALAR_UNIT] += cost
    core.instructions += 1
    core.counts[pc] += 1
    core.emu.on_halt(core, pc, t, cost)
    return -1


def _li(core: Core, ops: tuple[int, int], pc: int, t: int) -> int:
    core.regs[ops[0]] = ops[1]
    return pc + 1


def _rdsr(core: Core, ops: tuple[int, int], pc: int, t: int) -> int:
    core.regs[ops[0]] = core.special[ops[1]]
    return pc + 1


# ALU ops that stay within 64 bits for 64-bit operands need no wrap.
_NO_WRAP = {"and", "or", "xor", "min", "max", "slt", "seq", "shr"}


def _alu_wrap(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    v = ops[3](regs[ops[1]], regs[ops[2]])
    if not _LO <= v < _HI:
        v = ((v + _SIGN) & MASK64) - _SIGN
    regs[ops[0]] = v
    return pc + 1


def _alu(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    regs[ops[0]] = ops[3](regs[ops[1]], regs[ops[2]])
    return pc + 1


def _add(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    v = regs[ops[1]] + regs[ops[2]]
    if not _LO <= v < _HI:
        v = ((v + _SIGN) & MASK64) - _SIGN
    regs[ops[0]] = v
    return pc + 1


def _addi(core: Core, ops: tuple[int, int, int], pc: int, t: int) -> int:
    regs = core.regs
    v = regs[ops[1]] + ops[2]
    if not _LO <= v < _HI:
        v = ((v + _SIGN) & MASK64) - _SIGN
    regs[ops[0]] = v
    return pc + 1


def _alui_wrap(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    v = ops[3](regs[ops[1]], ops[2])
    if not _LO <= v < _HI:
        v = ((v + _SIGN) & MASK64) - _SIGN
    regs[ops[0]] = v
    return pc + 1


def _div(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    b = regs[ops[2]]
    if b == 0:
        raise Fault(TrapKind.BAD_OPERAND, f"integer division by zero (r{ops[2]} is 0)")
    v = wrap64(ops[3](regs[ops[1]], b))
    if ops[0]:
        regs[ops[0]] = v
    return pc + 1


def _branch(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    return ops[2] if ops[3](regs[ops[0]], regs[ops[1]]) else pc + 1


def _beq(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    return ops[2] if regs[ops[0]] == regs[ops[1]] else pc + 1


def _bne(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    return ops[2] if regs[ops[0]] != regs[ops[1]] else pc + 1


def _blt(core: Core, ops: tuple[int, int, int, Any], pc: int, t: int) -> int:
    regs = core.regs
    return ops[2] if regs[ops[0]] < regs[ops[1]] else pc + 1


def _jmp(core: Core, target: int, pc: int, t: int) -> int:
    return target


def _loop(core: Core, ops: tuple[int, int], pc: int, t: int) -> int:
    regs = core.regs
    r = ops[0]
    v = regs[r] - 1
    if v < _LO:
        v = ((v + _SIGN) & MASK64) - _SIGN
    if r:
        regs[r] = v
    return ops[1] if v != 0 else pc + 1


def _bad_target(target: int, n: int) -> Handler:
    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        raise Fault(TrapKind.ILLEGAL, f"branch target {target} is outside the code section "
                                      f"(instructions 0..{n - 1})")

    return h


def _checked(target: int, n: int, handler: Handler) -> Handler:
    """`handler`, or one that traps when the branch is taken, when `target` lies outside the section."""
    if 0 <= target < n:
        return handler
    bad = _bad_target(target, n)

    def h(core: Core, ops: Any, pc: int, t: int) -> int:
        npc = handler(core, ops, pc, t)
        if npc == target:
            return bad(core, ops, pc, t)
        return npc

    return h


def prepare(ins: Instr, emu: Emulator, ncode: int) -> tuple[Handler, Any]:
    """The handler and operands of a scalar instruction."""
    sem = ins.spec.semantics
    mn = ins.spec.mnemonic
    a = ins.args
    if sem == "nop":
        return _nop, None
    if sem == "halt":
        return _halt, emu.cost_of(ins)
    if sem == "li":
        return (_li, (a[0], wrap64(a[1]))) if a[0] else (_nop, None)
    if sem == "rdsr":
        return (_rdsr, (a[0], a[1].value)) if a[0] else (_nop, None)
    if sem in ("alu", "alui"):
        rd = a[0]
        op = mn[:-1] if sem == "alui" else mn
        fn = ALU[op]
        if op in ("div", "rem"):
            if sem == "alui":
                raise AssertionError(f"no immediate form of {op} is expected")
            return _div, (rd, a[1], a[2], fn)  # still traps on a zero divisor when rd is r0
        if not rd:
            return _nop, None
        if sem == "alui":
            if op == "add":
                return _addi, (rd, a[1], a[2])
            return (_alui_wrap, (rd, a[1], a[2], fn))
        if op == "add":
            return _add, (rd, a[1], a[2], fn)
        return (_alu if op in _NO_WRAP else _alu_wrap), (rd, a[1], a[2], fn)
    if sem == "branch":
        target = a[2]
        fast = {"beq": _beq, "bne": _bne, "blt": _blt}.get(mn, _branch)
        return _checked(target, ncode, fast), (a[0], a[1], target, ins.spec.fn)
    if sem == "jmp":
        target = a[0]
        return (_jmp if 0 <= target < ncode else _bad_target(target, ncode)), target
    if sem == "loop":
        target = a[1]
        return _checked(target, ncode, _loop), (a[0], target)
    raise AssertionError(f"no scalar handler for {mn}")
