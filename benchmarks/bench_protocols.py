"""Per-paper protocol timings on the packaged SmolLM2: our protocol, the paper's, and the authors' own way of capturing.

Side by side in one run, no activation cache:

- jin2024 (concept-capitals): one batched pass capturing the residual and
  mlp-input sites, then the probes of each protocol (5-fold CV for ours, one
  split for theirs); against their capture: one text at a time with hooks on
  every ``post_attention_layernorm`` (Luckfort/CD utils.py).
- skean2024 (mteb-lee-sts): one pass capturing the residual and normed sites;
  against their capture: a model truncated to l blocks loaded and run for every
  l = 0..L (OFSkean/information_flow's harness runs once per layer). mteb's
  evaluation of the L+1 layers is the same for both protocols and timed once.
- biran2024 (backpatch-two-hop): the evaluator under each protocol on the same
  queries (all swept, every ``--layer-step``-th layer).
- xie2024 (consistency-coinflip): the evaluator under each protocol on the
  same questions (ours: 8 paths of 64 tokens; theirs: 2 x 20 paths of up to
  512 tokens, stopped at a newline).

Prints seconds per stage and the ratios. Run: ``python benchmarks/bench_protocols.py [--device cuda]``.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

from layerbench import load_model
from layerbench.capture import CaptureRequest, capture_layers
from layerbench.data import load_task_data
from layerbench.evaluators.backpatch import evaluate_backpatch
from layerbench.evaluators.consistency import evaluate_consistency, evaluate_xie2024
from layerbench.evaluators.mteb import evaluate_mteb
from layerbench.evaluators.probe import evaluate_probe
from layerbench.families import EvaluatorContext
from layerbench.specs import get_task
from layerbench.specs.protocols import get_protocol


def clock(fn):
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


def under(name: str, protocol: str, **settings):
    return get_task(name).under(protocol, {**get_protocol(protocol).settings, **settings})


def jin_one_at_a_time(handle, texts: list[str]) -> None:
    """Their capture: each text alone, hooks on every block's post_attention_layernorm, the last token kept."""
    kept = []
    hooks = [b.post_attention_layernorm.register_forward_hook(lambda m, a, o: kept.append(o[0, -1].cpu())) for b in handle.model.model.layers]
    try:
        for text in texts:
            with torch.no_grad():
                handle.model(**handle.tokenizer(text, return_tensors="pt").to(handle.device))
    finally:
        for h in hooks:
            h.remove()


def skean_truncated(handle, texts: list[str]) -> tuple[float, float]:
    """Their capture: a model truncated to l blocks for every l, left padding, mean over real tokens; (load seconds, encode seconds)."""
    from transformers import AutoModel

    load = encode = 0.0
    tok = handle.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        for layer in range(handle.n_layers + 1):
            seconds, model = clock(lambda layer=layer: AutoModel.from_pretrained(handle.checkpoint.path, num_hidden_layers=layer, dtype=handle.dtype).to(handle.device).eval())
            load += seconds
            began = time.perf_counter()
            for start in range(0, len(texts), 32):
                enc = tok(texts[start : start + 32], return_tensors="pt", padding=True).to(handle.device)
                with torch.no_grad():
                    hidden = model(**enc).last_hidden_state
                [hidden[i, -n:].mean(0).cpu() for i, n in enumerate(enc["attention_mask"].sum(-1))]
            encode += time.perf_counter() - began
    finally:
        tok.padding_side = side
    return load, encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--probe-texts", type=int, default=200)
    parser.add_argument("--mteb-limit", type=int, default=100)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--layer-step", type=int, default=5)
    parser.add_argument("--questions", type=int, default=6)
    args = parser.parse_args()
    handle = load_model("smollm2-135m-q4", device=args.device)
    layers = range(1, handle.n_layers + 1)

    print("jin2024: concept-capitals,", args.probe_texts, "texts")
    spec = get_task("concept-capitals")
    data = load_task_data(spec, limit=args.probe_texts)
    t_capture, captured = clock(lambda: capture_layers(handle, CaptureRequest(data.texts, pooling="last", cache=False, sites=("residual", "mlp-input"))))
    t_ours, _ = clock(lambda: evaluate_probe(EvaluatorContext(data, spec, 0, states={"clean": captured.sites["residual"].pooled})))
    t_jin, _ = clock(lambda: evaluate_probe(EvaluatorContext(data, under("concept-capitals", "jin2024"), 0, states={"clean": captured.sites["mlp-input"].pooled}, layers=layers)))
    t_theirs, _ = clock(lambda: jin_one_at_a_time(handle, data.texts))
    print(f"  capture, both sites, one pass {t_capture:7.1f} s | their capture, one text at a time {t_theirs:7.1f} s ({t_theirs / t_capture:.1f}x)")
    print(f"  probes: layerbench (5-fold cv) {t_ours:7.1f} s | jin2024 (one split) {t_jin:7.1f} s")

    print("skean2024: mteb-lee-sts, limit", args.mteb_limit)
    spec = get_task("mteb-lee-sts")
    data = load_task_data(spec, limit=args.mteb_limit)
    t_capture, captured = clock(lambda: capture_layers(handle, CaptureRequest(data.texts, pooling="mean", cache=False, sites=("residual", "normed"))))
    t_eval, _ = clock(lambda: evaluate_mteb(EvaluatorContext(data, under("mteb-lee-sts", "skean2024"), 0, states={"clean": captured.sites["normed"].pooled})))
    load, encode = skean_truncated(handle, data.texts)
    print(f"  {len(data.texts)} texts; capture, both sites, one pass {t_capture:7.1f} s | their capture, {handle.n_layers + 1} truncated models: "
          f"load {load:.1f} s + encode {encode:.1f} s ({(load + encode) / t_capture:.1f}x)")
    print(f"  mteb evaluation of {handle.n_layers + 1} layers (either protocol) {t_eval:7.1f} s")

    print("biran2024: backpatch-two-hop,", args.queries, "queries, all swept, layer step", args.layer_step)
    data = load_task_data(get_task("backpatch-two-hop"), limit=args.queries)
    t_ours, _ = clock(lambda: evaluate_backpatch(EvaluatorContext(data, under("backpatch-two-hop", "layerbench", sweep="all", layer_step=args.layer_step), 0, handle=handle)))
    t_biran, _ = clock(lambda: evaluate_backpatch(EvaluatorContext(data, under("backpatch-two-hop", "biran2024", sweep="all", layer_step=args.layer_step), 0, handle=handle)))
    print(f"  layerbench {t_ours:7.1f} s | biran2024 {t_biran:7.1f} s (the same number of layer pairs; their prompts and matching)")

    print("xie2024: consistency-coinflip,", args.questions, "questions")
    data = load_task_data(get_task("consistency-coinflip"), limit=args.questions + 3)
    t_ours, _ = clock(lambda: evaluate_consistency(EvaluatorContext(data, get_task("consistency-coinflip"), 0, handle=handle)))
    t_xie, _ = clock(lambda: evaluate_xie2024(EvaluatorContext(data, under("consistency-coinflip", "xie2024"), 0, handle=handle)))
    print(f"  layerbench (8 paths, 64 tokens) {t_ours:7.1f} s, {t_ours / args.questions:.1f} s/question | "
          f"xie2024 (2 x 20 paths, up to 512 tokens) {t_xie:7.1f} s, {t_xie / args.questions:.1f} s/question")


if __name__ == "__main__":
    main()
