"""What the capture benchmarks share: their command line and the device sync before a clock is read."""
from __future__ import annotations

import argparse

import torch

PACKAGED_SIZES = {"sentence-transformers/all-MiniLM-L6-v2": 1024, "smollm2-135m-q4": 256}  # texts timed per packaged model


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timing covers it (nothing to do on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def capture_arguments(description: str) -> argparse.Namespace:
    """``--device``, ``--dtype``, ``--repeats`` and ``--models`` (adds ``sizes``: model -> texts timed: the packaged two, else 512 each)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each timing")
    parser.add_argument("--models", nargs="*", help="models to time instead of the packaged two (any name load_model takes)")
    args = parser.parse_args()
    args.sizes = {name: 512 for name in args.models} if args.models else dict(PACKAGED_SIZES)
    return args
