"""`make demo`: compile ResNet-50 for one D1, run it on the emulator, check it against eager, report.

The model is Hugging Face transformers' ResNet-50 built from its default config with random weights
(nothing is downloaded), batch 1 at 224 x 224. `dojoc.compile` exports it, folds batch norm into the
convolutions, maps every op onto regions of the 354 cores and generates their code; calling the program
runs it on the emulator. The printed report's cycles come from the emulator running that program.

    python examples/demo.py [--size 224] [--machine d1] [--precision bf16] [-o out/resnet50]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import dojoc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--machine", default="d1", help="preset name or .toml file")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "cfp8"])
    ap.add_argument("-o", "--output", default=None, help="also save program.s, program.dobj, report.json here")
    args = ap.parse_args()

    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()  # the ImageNet head
    x = torch.randn(1, 3, args.size, args.size)
    params = sum(p.numel() for p in model.parameters())
    print(f"ResNet-50 (transformers, random weights, {params / 1e6:.1f} M parameters), input {tuple(x.shape)}, "
          f"machine {args.machine}, precision {args.precision}")

    t0 = time.perf_counter()
    program = dojoc.compile(model, (x,), machine=args.machine, precision=args.precision)
    t1 = time.perf_counter()
    print(f"compiled in {t1 - t0:.1f} s; running on the emulator ...", flush=True)
    out = program(x)
    t2 = time.perf_counter()
    with torch.no_grad():
        want = model(x).logits.numpy().astype(np.float64).ravel()
    got = out.logits.detach().float().numpy().astype(np.float64).ravel()
    pcc = float(np.corrcoef(got, want)[0, 1])
    max_err = float(np.abs(got - want).max())
    print(f"emulated in {t2 - t1:.1f} s\n")
    report = program.report
    assert report is not None
    print(report.format())
    print(f"\nagainst eager FP32: PCC {pcc:.6f}, max |error| {max_err:.4g} (logits up to {np.abs(want).max():.3g});"
          f" top-1 class {int(got.argmax())} vs eager {int(want.argmax())}")
    if args.output:
        program.save(args.output)
        print(f"wrote {args.output}/program.s, program.dobj, report.json")
    ok = pcc >= 0.99 or args.precision == "cfp8"
    if not ok:
        print("error: PCC below 0.99", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
