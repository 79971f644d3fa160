"""The `--input` SPEC parser under random input: every SPEC gives tensors of its shape or one InputError
naming it, never another exception, and a SPEC larger than the host should allocate is refused first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dojoc.targets
from dojoc.errors import InputError
from dojoc.targets import parse_inputs

DIMS = st.lists(st.integers(0, 10**7), min_size=1, max_size=5).map(lambda ds: "x".join(map(str, ds)))
NUMS = st.one_of(st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=False).map(repr),
                 st.sampled_from(["1e400", "-1e400", "0", "1", "2", "-1", "0.5"]))
DTYPE = st.sampled_from(["", ":float32", ":bf16", ":int64", ":i32", ":bool", ":f16", ":int"])
RANGE = st.one_of(st.just(""), st.tuples(st.sampled_from("[("), NUMS, NUMS, st.sampled_from("])")).map(
    lambda t: f"{t[0]}{t[1]},{t[2]}{t[3]}"))
SPECS = st.one_of(st.tuples(st.one_of(DIMS, st.just("scalar")), DTYPE, RANGE).map("".join), st.text(max_size=30))


@settings(max_examples=300, deadline=None)
@given(SPECS)
def test_random_specs_give_tensors_or_one_input_error(spec: str) -> None:
    limit, dojoc.targets.MAX_INPUT_BYTES = dojoc.targets.MAX_INPUT_BYTES, 1 << 20  # the test allocates little
    try:
        args, _ = parse_inputs([spec])
    except InputError as e:
        assert "--input" in str(e)
        return
    finally:
        dojoc.targets.MAX_INPUT_BYTES = limit
    (x,) = args
    assert x.numel() * x.element_size() <= 1 << 20


@pytest.mark.parametrize("spec, message", [
    ("100000x100000x100000", "more than an input may hold here"),
    ("0x49x72089x261917x9969215", "ignoring the zero"),  # torch's strides overflow int64 even when empty
    ("2x2:int32[0,1e30)", "does not fit int32"),
    ("2x2:bool[5,7)", "holds no integer in 0..1"),
    ("2:int32[0,1e400)", "must be finite"),
])
def test_specs_the_host_cannot_take_are_refused(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_inputs([spec])
