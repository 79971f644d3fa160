"""Hugging Face transformers models end to end on the emulator, with random weights built from their configs
(nothing is downloaded): ResNet-50, BERT (2 layers) and GPT-2 (2 layers).

- ResNet-50: `ResNetConfig()` (default depths 3-4-6-3, bottleneck) with a 1000-class head and random
  batch-norm statistics, batch 1 at 64 x 64 (224 x 224 is in benchmarks/models.py), on d1.
- BERT: `BertModel`, base width (768 wide, 12 heads, 3072 MLP) with 2 layers, batch 2 x 32 tokens, an
  attention_mask that pads the second sequence, and token_type_ids; on mesh4x4.
- GPT-2: `GPT2LMHeadModel`, small width (768, 12 heads) with 2 layers, use_cache=False, 32 tokens; on mesh4x4.

Each at fp32 (every output within rtol = atol = 1e-4 of eager) and bf16 (every output with a PCC of at least
0.99 against eager FP32); the reports' figures are checked as in test_three_paths.py (cycles from the
emulator, utilization recomputed, flops equal to torch.utils.flop_counter's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from test_three_paths import check_accuracy, check_report, eager, randomize_bn
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import FlopCounterMode

import dojoc
from isa.presets import load_machine

transformers = pytest.importorskip("transformers")

PRECISIONS = ("fp32", "bf16")


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    torch.manual_seed(0)
    yield


def run(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], machine: str,
        precision: str) -> tuple[dojoc.Program, dojoc.Report, Any]:
    """Compile and run once; check every output against eager FP32 and the report's figures. Returns the
    program, its report and its outputs."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        expected = model(*args, **kwargs)
    prog = dojoc.compile(model, args, example_kwargs=kwargs, machine=machine, precision=precision)
    out = prog(*args, **kwargs)
    assert type(out) is type(expected)  # eager's output structure (a transformers ModelOutput)
    want = [t for t in pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    check_accuracy(pytree.tree_leaves(out), want, precision)
    return prog, check_report(prog.report, precision, int(counter.get_total_flops()), machine), out


def mma_cores_per_op(prog: dojoc.Program) -> dict[str, set[int]]:
    """IR op name -> the cores that run matrix instructions for it (from the image's debug section)."""
    image = prog.image
    spread: dict[str, set[int]] = {}
    for d in image.debug:
        section = image.sections[d.section]
        if section.code[d.pc].spec.mnemonic == "mma":
            spread.setdefault(d.op, set()).update(section.cores)
    return spread


# -- ResNet-50 ---------------------------------------------------------------------------------------------

def resnet50() -> torch.nn.Module:
    cfg = transformers.ResNetConfig(num_labels=1000)
    assert list(cfg.depths) == [3, 4, 6, 3] and cfg.layer_type == "bottleneck"
    return randomize_bn(transformers.ResNetForImageClassification(cfg)).eval()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_resnet50_64x64_on_d1(precision: str) -> None:
    model, x = resnet50(), torch.randn(1, 3, 64, 64)
    prog, r, _ = run(model, (x,), {}, "d1", precision)
    d1 = load_machine("d1")
    # at 64 x 64 the convolutions are small, so not all of d1 is needed (at 224 x 224, >= 300 cores: see
    # test_resnet50_224_uses_most_of_d1); still, the ops are spread over regions covering most of the chip
    assert r.cores_used >= d1.num_cores // 2, r.cores_used
    spread = mma_cores_per_op(prog)
    convs = {op: cores for op, cores in spread.items() if op.startswith("convolution")}
    assert len(convs) == 53  # 1 stem + 16 blocks x 3 + 4 projection shortcuts
    assert max(len(c) for c in convs.values()) >= 32, sorted(len(c) for c in convs.values())
    assert len(set().union(*convs.values())) >= d1.num_cores // 2


def test_resnet50_224_uses_most_of_d1() -> None:
    """At 224 x 224 on d1 the program uses at least 300 of the 354 cores (compiled, not run: the run is in
    benchmarks/models.py; the report's cores_used is this same figure)."""
    model, x = resnet50(), torch.randn(1, 3, 224, 224)
    prog = dojoc.compile(model, (x,), machine="d1", precision="bf16")
    assert prog.lowered.cores_used >= 300, prog.lowered.cores_used
    _, flops = eager(model, (x,))
    assert prog.lowered.flops == flops > 8e9


@pytest.mark.parametrize(("cin", "cout", "size", "kernel", "stride"), [
    pytest.param(3, 64, 224, 7, 2, id="stem-224"),
    pytest.param(512, 512, 14, 3, 1, id="stage4-3x3-224"),
])
def test_large_conv_spreads_over_many_cores(cin: int, cout: int, size: int, kernel: int, stride: int) -> None:
    """A ResNet-50 convolution of real size (at 224 x 224) runs on a large region of d1."""
    conv = torch.nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2).eval()
    x = torch.randn(1, cin, size, size)
    prog, r, _ = run(conv, (x,), {}, "d1", "bf16")
    assert r.cores_used >= 64, r.cores_used
    (cores,) = mma_cores_per_op(prog).values()
    assert len(cores) == r.cores_used


# -- BERT ----------------------------------------------------------------------------------------------------

def bert() -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]:
    cfg = transformers.BertConfig(num_hidden_layers=2)  # bert-base otherwise: 768 wide, 12 heads
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    mask = torch.ones(2, 32, dtype=torch.long)
    mask[1, 20:] = 0  # the second sequence is padded
    return model, (ids,), {"attention_mask": mask, "token_type_ids": (torch.arange(32) >= 16).long().expand(2, 32)}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_bert(precision: str) -> None:
    model, args, kwargs = bert()
    prog, r, first = run(model, args, kwargs, "mesh4x4", precision)
    assert [i.name for i in prog.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert prog.output_names == ("last_hidden_state", "pooler_output")
    assert r.cores_used == 16
    # the mask is a real input: without the padding, the second sequence's outputs change, as in eager
    kwargs2 = {**kwargs, "attention_mask": torch.ones(2, 32, dtype=torch.long)}
    out = prog(*args, **kwargs2)
    with torch.no_grad():
        want = model(*args, **kwargs2)
    check_accuracy([out.last_hidden_state], [want.last_hidden_state], precision)
    assert (out.last_hidden_state[1] - first.last_hidden_state[1]).abs().max() > 0.1


# -- GPT-2 ---------------------------------------------------------------------------------------------------

def gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(n_layer=2, use_cache=False)  # gpt2-small otherwise: 768 wide, 12 heads
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gpt2(precision: str) -> None:
    model = gpt2()
    ids = torch.randint(0, model.config.vocab_size, (1, 32))
    prog, r, _ = run(model, (ids,), {}, "mesh4x4", precision)
    assert prog.output_names == ("logits",)
    assert r.cores_used == 16
