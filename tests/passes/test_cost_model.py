"""The cost model held to the emulator: over the ops of a ResNet and a BERT on smaller shapes, the median
error of predicted against emulated cycles per op stays within 15 % (benchmarks/cost_model.py measures the
full-size models)."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
import torch

import dojoc
from dojoc.mapping.explain import prediction_error, timed

transformers = pytest.importorskip("transformers")

LIMIT = 0.15


def _median_error(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], machine: str) -> float:
    prog = dojoc.compile(model, args, example_kwargs=kwargs, machine=machine)
    _, report = prog.run(*args, **kwargs)
    errs = [prediction_error(r) for r in timed(report.ops)]
    assert len(errs) >= 10
    return statistics.median(errs)


def test_resnet_ops_are_predicted_within_15_percent() -> None:
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(num_labels=10, depths=[1, 1, 1, 1], hidden_sizes=[64, 128, 256, 512],
                                    embedding_size=32)
    model = transformers.ResNetForImageClassification(cfg).eval()
    err = _median_error(model, (torch.randn(1, 3, 64, 64),), {}, "d1")
    assert err <= LIMIT, f"median error {err:.1%}"


def test_bert_ops_are_predicted_within_15_percent() -> None:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=256, num_attention_heads=4,
                                  intermediate_size=1024, vocab_size=1000)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 64))
    err = _median_error(model, (ids,), {"attention_mask": torch.ones(1, 64, dtype=torch.long)}, "d1")
    assert err <= LIMIT, f"median error {err:.1%}"
