"""Measure the reference trainer's ResNet-50 throughput (images/s) on this machine, for the README's estimate.

    python examples/syn2real/throughput.py [--device cpu|cuda] [--batch-size 32] [--steps 5] [--amp]

Times full training steps (forward, L1 backward, Adam step) on random 224x224 batches and test forwards,
after one warm-up step each; image decoding is not included.
"""

from __future__ import annotations

import argparse
import time

import torch

from reshape.protocol import PAPER_PROTOCOL
from reshape.train_reference import build_model, make_optimizer


def measure(device: str, batch: int, steps: int, amp: bool) -> tuple[float, float]:
    model = build_model("none", seed=0).to(device)
    optimizer = make_optimizer(model, PAPER_PROTOCOL)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.rand(batch, device=device) * 10
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=amp)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            pred, _ = model(x)
        torch.nn.functional.l1_loss(pred.float(), y).backward()
        optimizer.step()

    def test_step() -> None:
        with torch.no_grad(), autocast:
            model(x)

    rates = []
    for step, mode in ((train_step, "train"), (test_step, "eval")):
        getattr(model, mode)()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(batch * steps / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=PAPER_PROTOCOL.batch_size)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--amp", action="store_true")
    args = p.parse_args()
    train, test = measure(args.device, args.batch_size, args.steps, args.amp)
    print(
        f"device {args.device}, {torch.get_num_threads()} torch threads, batch {args.batch_size}, amp {args.amp}"
    )
    print(f"train step (fwd + bwd + Adam): {train:.1f} images/s")
    print(f"test forward:                  {test:.1f} images/s")


if __name__ == "__main__":
    main()
