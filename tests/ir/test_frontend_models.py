"""Whole models: torch.export (and AOTAutograd) -> IR -> verify -> Interpreter matches eager (fp32)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from ir_helpers import check_aot, check_export, randomize_bn

from dojoc.ir import Op


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.silu(self.fc2(torch.relu(self.fc1(x)))))


class SmallCNN(nn.Module):
    """Strided, padded, dilated, grouped and depthwise convolutions, batch norm, pooling, conv1d."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16)
        self.bn2 = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 1, groups=4)
        self.avg = nn.AvgPool2d(2, ceil_mode=True)
        self.adapt = nn.AdaptiveAvgPool2d((3, 3))
        self.conv1d = nn.Conv1d(32, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 9, 10)
        randomize_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.stem(x))))
        x = F.hardtanh(self.bn2(self.dw(x)), -2.0, 2.0)
        x = self.adapt(self.avg(self.grouped(x)))
        x = self.conv1d(x.flatten(2))
        return self.fc(x.flatten(1))


class Block(nn.Module):
    """A pre-norm transformer block: layer norm, multi-head attention through sdpa, gelu MLP."""

    def __init__(self, dim: int = 32, heads: int = 4, causal: bool = False) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.up, self.down = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))


class ClassifierHead(nn.Module):
    """Softmax and log-softmax heads over a block, plus a manual attention with masked_fill."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Block(causal=True)
        self.head = nn.Linear(32, 7)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.block(x)
        scores = h @ h.transpose(-1, -2) / math.sqrt(h.shape[-1])
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        attn = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        logits = self.head(attn @ h)
        return logits, {"logp": F.log_softmax(logits, -1), "p": torch.softmax(logits, -1)}


def test_mlp() -> None:
    g = check_export(MLP().eval(), (torch.randn(4, 32),))
    assert g.op_counts() == {"matmul": 3, "add": 3, "relu": 1, "silu": 1}
    assert [n.attrs["name"] for n in g.find(Op.INPUT)] == ["x"]


def test_small_cnn() -> None:
    g = check_export(SmallCNN().eval(), (torch.randn(2, 3, 32, 32),))
    convs = g.find(Op.CONV2D)
    assert [c.attrs["groups"] for c in convs] == [1, 16, 4, 1]
    assert convs[1].attrs["dilation"] == (2, 2) and convs[0].attrs["stride"] == (2, 2)
    counts = g.op_counts()
    assert counts["batch_norm"] == 2 and counts["max_pool2d"] == 1 and counts["avg_pool2d"] == 1
    assert counts["adaptive_avg_pool2d"] == 1 and counts["clamp"] == 1
    assert all(n.source and "test_frontend_models.py" in n.source for n in convs)


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_block(causal: bool) -> None:
    g = check_export(Block(causal=causal).eval(), (torch.randn(2, 8, 32),))
    (sdpa,) = g.find(Op.SDPA)
    assert sdpa.attrs["causal"] == causal and sdpa.attrs["scale"] == pytest.approx(1 / math.sqrt(8))
    assert g.op_counts()["layer_norm"] == 2 and g.find(Op.GELU)[0].attrs["approximate"] == "tanh"


def test_transformer_block_with_mask_input() -> None:
    mask = torch.rand(2, 1, 8, 8) > 0.3
    mask[..., 0] = True
    g = check_export(Block().eval(), (torch.randn(2, 8, 32), mask))
    assert len(g.inputs) == 2 and len(g.find(Op.SDPA)[0].inputs) == 4


def test_softmax_heads_and_output_structure() -> None:
    g = check_export(ClassifierHead().eval(), (torch.randn(2, 6, 32),))
    assert g.output_names == ["out0", "out1_logp", "out1_p"]
    assert g.op_counts()["softmax"] == 2 and g.op_counts()["log_softmax"] == 1
    assert g.out_spec is not None and json.loads(g.out_spec)[1]["type"] == "builtins.tuple"


def test_aot_frontend_matches_export() -> None:
    block = Block(causal=True).eval()
    g = check_aot(block, (torch.randn(2, 8, 32),))
    assert g.op_counts()["sdpa"] == 1 and g.op_counts()["layer_norm"] == 2
    assert {p for p in g.parameters if not p.startswith("qkv")} >= {"ln1.weight", "proj.bias"}
    g = check_aot(SmallCNN().eval(), (torch.randn(1, 3, 32, 32),))
    assert g.op_counts()["batch_norm"] == 2


# -- Hugging Face transformers, random weights from small configs (no download) ---------------------

transformers = pytest.importorskip("transformers")


def test_hf_resnet() -> None:
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 64], depths=[1, 2, 1, 1],
                                    layer_type="bottleneck")
    model = randomize_bn(transformers.ResNetForImageClassification(cfg))
    g = check_export(model, (torch.randn(1, 3, 32, 32),))
    counts = g.op_counts()
    assert counts["conv2d"] == counts["batch_norm"] and counts["max_pool2d"] == 1
    assert g.output_names == ["logits"]


def test_hf_resnet_basic_aot() -> None:
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    check_aot(randomize_bn(transformers.ResNetModel(cfg)), (torch.randn(2, 3, 32, 32),))


def _bert() -> nn.Module:
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(cfg).eval()


def test_hf_bert() -> None:
    ids = torch.randint(0, 120, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    g = check_export(_bert(), (ids,), {"attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    assert [n.attrs["name"] for n in g.find(Op.INPUT)] == ["input_ids", "attention_mask", "token_type_ids"]
    assert g.output_names == ["last_hidden_state", "pooler_output"]
    assert g.op_counts()["sdpa"] == 2 and g.op_counts()["gelu"] == 2


def test_hf_bert_no_mask_folds_everything_but_the_model() -> None:
    g = check_export(_bert(), (torch.randint(0, 120, (1, 12)),))
    assert {"arange", "index_select", "cumsum"}.isdisjoint(g.op_counts())


def _gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(vocab_size=120, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2Model(cfg).eval()


def test_hf_gpt2() -> None:
    g = check_export(_gpt2(), (torch.randint(0, 120, (2, 9)),))
    assert g.output_names == ["last_hidden_state"] and g.op_counts()["sdpa"] == 2
    # the causal mask is computed from constants only, so it is folded into one parameter
    (mask,) = [n for n in g.find(Op.PARAM) if n.output.type.dtype.value == "bool"]
    assert mask.output.type.shape[-2:] == (9, 9)


def test_hf_gpt2_with_padding_mask() -> None:
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :3] = 0
    check_export(_gpt2(), (torch.randint(0, 120, (2, 9)),), {"attention_mask": mask})


def test_hf_gpt2_aot() -> None:
    g = check_aot(_gpt2(), (torch.randint(0, 120, (1, 7)),))
    assert g.op_counts()["sdpa"] == 2


def test_bf16_model() -> None:
    model = MLP().to(torch.bfloat16).eval()
    g = check_export(model, (torch.randn(4, 32, dtype=torch.bfloat16),), rtol=2e-2, atol=2e-2)
    assert {v.type.dtype.value for n in g.nodes for v in n.outputs} == {"bf16"}
