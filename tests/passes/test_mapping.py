"""The mapping as data: the decisions of a compile, their JSON round trip, edits that change the program,
and illegal mappings that fail with one error naming the op."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

import dojoc
from dojoc.errors import MappingError
from dojoc.mapping import Bound, Mapping, OpMapping, Where, format_cores, parse_cores
from dojoc.mapping.explain import format_explain, op_rows

MACHINE = "mesh4x4"


class Block(nn.Module):
    """A linear (matmul + bias + gelu epilogue), a second linear, a layer norm and a residual add. The
    hidden activation has a second reader, so it goes through DRAM and the cost model takes the tiled
    kernel for both linears on this small mesh (tests/passes/test_held.py has the pair held in SRAM); so
    has the layer norm's input, so the norm runs as its own op (the rows kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(64, 256), nn.Linear(256, 64), nn.LayerNorm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.fc1(x))
        y = self.fc2(h) + h[:, :64]
        return self.norm(y) + y


@pytest.fixture(scope="module")
def compiled() -> tuple[nn.Module, torch.Tensor, dojoc.Program]:
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(64, 64)
    return model, x, dojoc.compile(model, (x,), machine=MACHINE, precision="fp32")


def _key(prog: dojoc.Program, kernel: str, index: int = 0) -> OpMapping:
    assert prog.mapping is not None
    return [o for o in prog.mapping.ops if o.kernel == kernel][index]


def _code(prog: dojoc.Program) -> list[tuple[tuple[int, ...], tuple[object, ...]]]:
    return [(s.cores, s.code) for s in prog.image.sections]


def test_cores_format_and_parse() -> None:
    assert format_cores((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"
    assert parse_cores("0-2,5,7-8", "x") == (0, 1, 2, 5, 7, 8)
    for bad, msg in (("1-x", "malformed"), ("", "no cores"), ("3,3", "twice"), ("5-2", "malformed")):
        with pytest.raises(MappingError, match=msg):
            parse_cores(bad, "op a")


def test_every_op_has_a_decision_and_every_value_a_place(compiled: tuple[nn.Module, torch.Tensor,
                                                                          dojoc.Program]) -> None:
    _, _, prog = compiled
    m = prog.mapping
    assert m is not None and m.machine == MACHINE and m.precision == "fp32"
    kernels = [o.kernel for o in m.ops]
    assert kernels.count("matmul") == 2 and "rows" in kernels and "eltwise" in kernels
    fused = [o for o in m.ops if o.fused_into is not None]
    assert fused and all(f.fused_into in {o.op for o in m.ops if o.kernel == "matmul"} for f in fused)
    for o in m.ops:
        if o.fused_into is None:
            assert o.cores and all(0 <= c < 16 for c in o.cores) and o.predicted_cycles > 0
            assert isinstance(o.bound, Bound)
    mm = _key(prog, "matmul")
    tile = dict(mm.tile)
    assert set(tile) == {"m", "n", "k"} and dict(mm.split)["rows"] == -(-64 // tile["m"])
    # every DRAM tensor is placed; resident weights have their SRAM shards on the op's region
    names = {t.name for t in prog.image.tensors}
    assert {v.value for v in m.values} == names
    resident = [v for v in m.values if v.where is Where.SRAM]
    assert resident and all({s.core for s in v.shards} <= set(range(16)) for v in resident)
    assert any({s.core for s in v.shards} <= set(mm.cores) for v in resident)
    assert all(v.lifetime[0] <= v.lifetime[1] for v in m.values)
    assert mm.reads and mm.writes


def test_json_round_trip_rebuilds_the_same_program(compiled: tuple[nn.Module, torch.Tensor,
                                                                    dojoc.Program]) -> None:
    model, x, prog = compiled
    assert prog.mapping is not None
    text = prog.mapping.to_json()
    again = Mapping.from_json(text)
    assert again == prog.mapping
    assert json.loads(text)["schema_version"] == 1
    prog2 = dojoc.compile(model, (x,), machine=MACHINE, precision="fp32", mapping=json.loads(text))
    assert _code(prog2) == _code(prog)


def test_editing_a_decision_changes_the_program(compiled: tuple[nn.Module, torch.Tensor, dojoc.Program],
                                                tmp_path: object) -> None:
    model, x, prog = compiled
    assert prog.mapping is not None
    mm = _key(prog, "matmul", 1)
    ops = list(prog.mapping.ops)
    i = ops.index(mm)
    ops[i] = replace(mm, cores=(3, 7))  # the second linear on two other cores
    edited = replace(prog.mapping, ops=tuple(ops))
    prog2 = dojoc.compile(model, (x,), machine=MACHINE, precision="fp32", mapping=edited)
    assert prog2.mapping is not None
    got = next(o for o in prog2.mapping.ops if o.key == mm.key)
    assert got.cores == (3, 7) and got.predicted_cycles != mm.predicted_cycles
    assert _code(prog2) != _code(prog)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(prog2(x), want, rtol=1e-4, atol=1e-4)
    # a different tile: the split follows it, and the program still matches eager
    tm = dict(mm.tile)["m"]
    new_m = max(8, tm // 2) if tm > 8 else 16
    ops[i] = replace(mm, cores=(3, 7), tile=(("m", new_m),) + mm.tile[1:],
                     split=(("batch", 1), ("rows", -(-64 // new_m)), ("cols", dict(mm.split)["cols"])))
    prog3 = dojoc.compile(model, (x,), machine=MACHINE, precision="fp32", mapping=replace(edited, ops=tuple(ops)))
    assert prog3.mapping is not None
    assert dict(next(o for o in prog3.mapping.ops if o.key == mm.key).tile)["m"] == new_m
    torch.testing.assert_close(prog3(x), want, rtol=1e-4, atol=1e-4)
    # a rows kernel on other cores
    rows = _key(prog, "rows")
    ops = list(prog.mapping.ops)
    ops[ops.index(rows)] = replace(rows, cores=(9,), split=(("rows", 1),))
    prog4 = dojoc.compile(model, (x,), machine=MACHINE, precision="fp32", mapping=replace(edited, ops=tuple(ops)))
    assert prog4.mapping is not None
    assert next(o for o in prog4.mapping.ops if o.key == rows.key).cores == (9,)
    torch.testing.assert_close(prog4(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("edit, match", [
    (lambda o: replace(o, cores=(0, 99)), "core 99 of its region is off the mesh"),
    (lambda o: replace(o, split=(("batch", 1), ("rows", 3), ("cols", 1))), "does not divide the op"),
    (lambda o: replace(o, tile=(("m", 64), ("n", 256), ("k", 100000))), "tile k=100000 must be between"),
    (lambda o: replace(o, kernel="conv2d"), "runs the 'matmul' kernel"),
    (lambda o: replace(o, op="nonexistent_op"), "the graph has no op of that name"),
    (lambda o: replace(o, part=5), "does not take"),
])
def test_illegal_mappings_name_the_op(compiled: tuple[nn.Module, torch.Tensor, dojoc.Program], edit: object,
                                      match: str) -> None:
    model, x, prog = compiled
    assert prog.mapping is not None
    mm = _key(prog, "matmul")
    ops = list(prog.mapping.ops)
    bad = edit(mm)  # type: ignore[operator]
    ops[ops.index(mm)] = bad
    with pytest.raises(MappingError, match=match) as info:
        dojoc.compile(model, (x,), machine=MACHINE, precision="fp32", mapping=replace(prog.mapping, ops=tuple(ops)))
    assert bad.key in str(info.value)


def test_a_tile_that_does_not_fit_sram_is_named() -> None:
    from isa.presets import load_machine

    small = load_machine(MACHINE, ["sram_bytes=262144"])
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(64, 64)
    prog = dojoc.compile(model, (x,), machine=small, precision="fp32")
    assert prog.mapping is not None
    mm = _key(prog, "matmul", 1)  # 64 x 256 @ 256 x 64
    big = replace(mm, cores=(0,), tile=(("m", 64), ("n", 64), ("k", 256)),
                  split=(("batch", 1), ("rows", 1), ("cols", 1)))
    ops = tuple(big if o is mm else o for o in prog.mapping.ops)
    with pytest.raises(MappingError, match=f"op {mm.key}: tiles m=64 n=64 with k=256 .* do not fit"):
        dojoc.compile(model, (x,), machine=small, precision="fp32", mapping=replace(prog.mapping, ops=ops))


def test_malformed_mapping_files() -> None:
    for text, match in (("{", "not valid JSON"), ("[]", "a JSON object"), ('{"schema_version": 9, "ops": []}',
                                                                            "schema_version"),
                        ('{"ops": [{"op": 1}]}', "string fields"),
                        ('{"ops": [{"op": "a", "kernel": "matmul", "cores": "0", "tile": {"m": "x"}}]}',
                         "object of integers"),
                        ('{"ops": [{"op": "a", "kernel": "k", "cores": "0"}, {"op": "a", "kernel": "k", '
                         '"cores": "0"}]}', "twice")):
        with pytest.raises(MappingError, match=match):
            Mapping.from_json(text)


def test_explain_rows_have_predicted_and_emulated_cycles(compiled: tuple[nn.Module, torch.Tensor,
                                                                          dojoc.Program]) -> None:
    _, x, prog = compiled
    _, report = prog.run(x)
    rows = [dict(r) for r in report.ops]
    assert rows == op_rows(prog.lowered, None) or len(rows) == len(op_rows(prog.lowered, None))
    ran = [r for r in rows if "fused_into" not in r]
    assert ran and all(r["emulated_cycles"] and r["emulated_cycles"] > 0 for r in ran)
    # the ops' emulated cycles cover the call: they sum to its cycles, but for the final halt
    assert 0 <= report.cycles - sum(r["emulated_cycles"] for r in ran) <= 16
    text = format_explain(rows)
    assert "median |predicted - emulated|" in text and _key(prog, "matmul").op in text
    assert "(fused)" in text and "sram x" in text


def test_a_decision_for_a_fused_op_names_the_op_that_computes_it(
        compiled: tuple[nn.Module, torch.Tensor, dojoc.Program]) -> None:
    model, x, prog = compiled
    assert prog.mapping is not None
    fused = next(o for o in prog.mapping.ops if o.fused_into is not None)
    mm = prog.mapping.by_key()[fused.fused_into]
    bad = replace(mm, op=fused.op)  # the host's decision, given under the fused op's name
    with pytest.raises(MappingError, match=f"op {fused.op}: this op runs inside {mm.op} .* give the decision to "
                                           f"op {mm.op}"):
        dojoc.compile(model, (x,), machine=MACHINE, precision="fp32", mapping=replace(prog.mapping, ops=(bad,)))
