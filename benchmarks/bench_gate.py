"""The regression gate's calibration: how often it fails a harmless change (false alarms), and what it sees (power),
paired (item records) and unpaired (standard errors and seed noise) side by side on the same runs.

Every trial runs the packaged SmolLM2 on the ``quick`` suite (``--no-metrics``: the label-free metrics are diagnostics
and never gate) and compares it with ``layerbench compare``'s logic against the committed ``baselines/quick``:

- harmless changes, each of which the gate must pass: another ``--batch-size`` (the same weights; padding moves the
  last float bits), and weight noise of 1e-3 x each matrix's standard deviation (seeds 0, 1, ...);
- damaging changes, which it should fail: weight noise of 0.5 x sd (the issue's case), and smaller scales for a power curve.

Per trial it prints whether the paired and the unpaired gate fail, their headline and per-layer regressions, the
best-layer drop of concept-capitals' accuracy and Lee STS's Spearman, and the smallest drop each would have flagged
(the power). Trials are kept in ``--output``/trials.csv and a rerun skips those done.

Run: ``python benchmarks/bench_gate.py [--batch-sizes 1,2,4,8,12,16,24,32,48,64] [--noise-seeds 10] [--power-scales 0.1,0.2,0.3,0.5]``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd

from layerbench.cli import main
from layerbench.compare import compare_results, gate_power, read_seed_noise
from layerbench.models.perturb import noised_copy
from layerbench.models.resolve import resolve_checkpoint
from layerbench.results import load_items, load_results

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-q4"
WATCHED = {"concept-capitals": "capitals", "mteb-lee-sts": "lee_sts"}


def run_quick(model: str, output: Path, batch_size: str | None = None) -> float:
    """``layerbench run --suite quick --no-metrics`` of ``model`` into ``output``; its wall time in seconds."""
    args = ["run", "-m", model, "--suite", "quick", "--no-metrics", "--no-cache", "-o", str(output), "--quiet"]
    if batch_size:
        args += ["--batch-size", batch_size]
    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    if code != 0:
        raise SystemExit(f"layerbench run failed ({code}): {' '.join(args)}")
    return time.perf_counter() - began


def judge(baseline: Path, candidate: Path, tolerance: float) -> dict[str, object]:
    """The paired and the unpaired gate's verdicts on one candidate, and what they saw of the watched tasks."""
    base, cand = load_results(baseline), load_results(candidate)
    noise = read_seed_noise(baseline)
    paired = compare_results(base, cand, tolerance=tolerance, noise=noise, base_items=load_items(baseline), candidate_items=load_items(candidate))
    unpaired = compare_results(base, cand, tolerance=tolerance, noise=noise)
    out: dict[str, object] = {}
    for label, report in (("paired", paired), ("unpaired", unpaired)):
        regressed = report[report.verdict == "regression"]
        out[f"{label}_fails"] = not regressed.empty
        out[f"{label}_headline"] = int((regressed.kind == "headline").sum())
        out[f"{label}_per_layer"] = int((regressed.kind == "main").sum())
        power = gate_power(report).set_index("task")
        for task, short in WATCHED.items():
            out[f"{label}_{short}_power"] = float(power.best_layer_drop.get(task, float("nan")))
    best = paired[paired.metric.str.startswith("best:")].set_index("task")
    for task, short in WATCHED.items():
        out[f"{short}_drop"] = float(best["drop"].get(task, float("nan")))
    gated = paired[paired.kind != "diagnostic"]
    out["max_abs_change"] = float(gated.change.abs().max())
    return out


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=str(ROOT / "baselines" / "quick"))
    parser.add_argument("--output", default=str(ROOT / "bench-results" / "gate"))
    parser.add_argument("--batch-sizes", default="1,2,4,8,12,16,24,32,48,64")
    parser.add_argument("--noise-seeds", type=int, default=10)
    parser.add_argument("--power-scales", default="0.1,0.2,0.3,0.5")
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    output, baseline = Path(args.output), Path(args.baseline)
    output.mkdir(parents=True, exist_ok=True)
    table_path = output / "trials.csv"
    done = pd.read_csv(table_path) if table_path.is_file() else pd.DataFrame(columns=["trial"])
    trials = [(f"batch-size {b}", "harmless", None, b) for b in args.batch_sizes.split(",") if b]
    trials += [(f"noise 1e-3 seed {s}", "harmless", (1e-3, s), None) for s in range(args.noise_seeds)]
    trials += [(f"noise {float(x):g} seed 0", "damaging", (float(x), 0), None) for x in args.power_scales.split(",") if x]
    source = Path(resolve_checkpoint(MODEL).path)
    rows = done.to_dict("records")
    for name, kind, noise, batch in trials:
        if name in set(done.trial):
            continue
        slug = name.replace(" ", "-")
        model = MODEL
        if noise is not None:
            folder = output / "models" / slug
            if not folder.exists():
                noised_copy(source, folder, scale=noise[0], seed=noise[1])
            model = str(folder)
        seconds = run_quick(model, output / "runs" / slug, batch)
        if noise is not None:
            shutil.rmtree(output / "models" / slug)  # 540 MB of float32 weights per trial
        rows.append({"trial": name, "kind": kind, "seconds": round(seconds, 1), **judge(baseline, output / "runs" / slug, args.tolerance)})
        pd.DataFrame(rows).to_csv(table_path, index=False)
        print(f"{name}: {seconds:.0f} s, paired {'FAIL' if rows[-1]['paired_fails'] else 'pass'}, unpaired {'FAIL' if rows[-1]['unpaired_fails'] else 'pass'}", flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.drop(columns=["seconds"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    harmless = table[table.kind == "harmless"]
    for label in ("paired", "unpaired"):
        rate = harmless[f"{label}_fails"].mean()
        print(f"{label}: false alarms {int(harmless[f'{label}_fails'].sum())} of {len(harmless)} harmless trials ({rate:.1%}); "
              f"best-layer power on harmless trials (median): capitals {harmless[f'{label}_capitals_power'].median():.3f}, "
              f"Lee STS {harmless[f'{label}_lee_sts_power'].median():.3f}")
    for _, row in table[table.kind == "damaging"].iterrows():
        print(f"{row.trial}: capitals best-layer drop {row.capitals_drop:+.3f}, Lee STS {row.lee_sts_drop:+.3f}; paired "
              f"{'FAILS' if row.paired_fails else 'passes'} ({row.paired_headline} headline, {row.paired_per_layer} per-layer), unpaired "
              f"{'FAILS' if row.unpaired_fails else 'passes'} ({row.unpaired_headline} headline, {row.unpaired_per_layer} per-layer)")
    print(f"quick suite, SmolLM2, --no-metrics: median {table.seconds.median():.0f} s per run on this machine")


if __name__ == "__main__":
    main_bench()
