"""How fast the CLI answers: `layerbench --help`, `list` and `validate` against `python -c "import torch"`.

None of these commands imports torch (tests/test_cli.py checks it); this prints
their wall time, best of N fresh processes each, side by side with importing
torch alone, and the ratio. `list tasks` is timed warm (its task sizes are
memoised in the cache folder; the first call after an install builds mteb's
offline tasks to count them). Run: ``python benchmarks/bench_cli.py [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "layerbench --help": ["--help"],
    "layerbench list models": ["list", "models"],
    "layerbench list tasks": ["list", "tasks"],
    "layerbench list metrics": ["list", "metrics"],
    "layerbench validate tasks": ["validate", str(ROOT / "tasks")],
}


def seconds(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="best of N fresh processes per command")
    args = parser.parse_args()
    command = shutil.which("layerbench", path=str(Path(sys.executable).parent)) or "layerbench"
    subprocess.run([command, "list", "tasks"], check=True, capture_output=True)  # warm the task-size memo
    torch_time = min(seconds([sys.executable, "-c", "import torch"]) for _ in range(args.repeats))
    print(f"{'command':40} {'seconds':>8} {'/ import torch':>14}")
    baseline = 'python -c "import torch"'
    print(f"{baseline:40} {torch_time:8.2f} {1.0:14.2f}")
    for name, argv in COMMANDS.items():
        best = min(seconds([command, *argv]) for _ in range(args.repeats))
        print(f"{name:40} {best:8.2f} {best / torch_time:14.2f}")


if __name__ == "__main__":
    main()
