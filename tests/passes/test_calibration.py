"""cfp8: activation biases come from the activations' ranges on the example inputs."""

import numpy as np
import torch

import dojoc
from dojoc.codegen.lower import lower_graph
from dojoc.frontend import from_module
from dojoc.passes.calibrate import activation_ranges
from dojoc.pipeline import run_passes
from isa.presets import load_machine
from runtime_emu import run


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    # no biases: the outputs scale with the inputs, so the activations' resolution shows in them
    return torch.nn.Sequential(torch.nn.Linear(64, 128, bias=False), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10, bias=False)).eval()


def pcc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def test_ranges_are_the_interpreters() -> None:
    m = _mlp()
    x = torch.randn(4, 64) * 3
    graph = run_passes(from_module(m, (x,)))
    ranges = activation_ranges(graph, [x.numpy()])
    assert np.isclose(ranges[graph.inputs[0].name], float(x.abs().max()))
    assert np.isclose(ranges[graph.outputs[0].name], float(m(x).detach().abs().max()), rtol=1e-5)


def test_calibrated_cfp8_beats_the_fixed_bias_on_small_activations() -> None:
    m = _mlp()
    x = torch.randn(16, 64) * 1e-4  # far below the fixed bias's range: few CFP8 codes are left for it
    want = m(x).detach().numpy()
    prog = dojoc.compile(m, (x,), machine="mesh4x4", precision="cfp8")
    calibrated = pcc(prog(x).detach().numpy(), want)
    graph = run_passes(from_module(m, (x,)))
    fixed = lower_graph(graph, load_machine("mesh4x4"), "cfp8")  # no ranges: the fixed bias
    got = run(fixed.image, [x.numpy()]).outputs[fixed.output_names[0]]
    uncalibrated = 0.0 if not np.any(got) else pcc(got, want)  # all zero: every activation underflowed
    assert calibrated > 0.99 and calibrated > uncalibrated
