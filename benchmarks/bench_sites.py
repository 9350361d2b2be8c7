"""Capture time of one pass with three sites against one site, on the same texts.

For each packaged model, on BBC News headlines, side by side in one run (no
activation cache, so every call runs the model):

- one:      ``residual`` alone, the default capture;
- three:    ``residual``, ``normed`` and ``mlp-input`` from the same forward passes;
- separate: the three sites as three captures (three passes), the way a tool
            without sites would get them.

Prints texts per second and the ratios three/one (goal: 1.1 or less) and
separate/three, of the best of N repeats and of their medians. The repeats are
taken in turn (one, three, separate, one, ...), so drift on a busy machine hits
every column alike; on a shared 2-core VM single runs of the same capture vary
by 30 %, so read the two ratios together.
Run: ``python benchmarks/bench_sites.py [--device cuda] [--repeats 3]``.
"""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TQDM_DISABLE", "1")


from common import capture_arguments, synchronize

from layerbench import load_model
from layerbench.capture import CaptureRequest, capture_layers
from layerbench.data import load_packaged

SITES = ("residual", "normed", "mlp-input")


def timed(handle, texts, sites) -> float:
    began = time.perf_counter()
    capture_layers(handle, CaptureRequest(texts, pooling="mean", batch_size="auto", max_length=64, cache=False, sites=sites))
    synchronize(handle.device)
    return time.perf_counter() - began


def main() -> None:
    args = capture_arguments(__doc__.splitlines()[0])
    headlines = load_packaged("bbc-news", {"field": "headline"}).texts
    sizes = args.sizes
    print(f"{'model':40} {'device':7} {'texts':>5} {'one t/s':>8} {'three t/s':>9} {'three/one':>9} {'median ratio':>12} {'separate/three':>14}")
    for name, n in sizes.items():
        handle = load_model(name, device=args.device, dtype=args.dtype)
        if handle.device.type == "cuda":
            n *= 8
        texts = [f"{t} ({i})" for i, t in enumerate((headlines * (1 + n // len(headlines)))[:n])]
        timed(handle, texts[:64], SITES)  # warm-up
        one, three, separate = [], [], []
        for _ in range(args.repeats):
            one.append(timed(handle, texts, ("residual",)))
            three.append(timed(handle, texts, SITES))
            separate.append(sum(timed(handle, texts, (site,)) for site in SITES))
        t1, t3, ts = min(one), min(three), min(separate)
        median = statistics.median(three) / statistics.median(one)
        print(f"{name:40} {handle.device.type:7} {n:5d} {n / t1:8.1f} {n / t3:9.1f} {t3 / t1:9.3f} {median:12.3f} {ts / t3:14.2f}")


if __name__ == "__main__":
    main()
