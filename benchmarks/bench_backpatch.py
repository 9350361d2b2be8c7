"""Back-patching sweep: ours (one clean pass, cached prefix, all variants of a query in one batch, decoding stopped
once the verdict is settled) against the naive way (the authors': a full greedy generation from scratch for every
(position, ls, lt) variant), side by side in one run; the five checks of every packaged query, ours (each distinct
prompt once, in length-sorted batches of 64) against every prompt in data order in batches of 16; and the
internal-consistency task's questions per minute.

The naive way costs about 0.3 s per variant on 2 CPU cores, so it is timed on a seeded sample of ``--naive-sample``
variants per query and its total is that per-variant time times the number of variants (printed as such). On the
sampled variants both ways must give the same verdict, and our (possibly shorter) text must be a prefix of the naive one.

Internal consistency is timed both ways too: ours (each few-shot prompt prefilled once for its K samples, and its
paths' lens pass run on the prompt's cache) against the plain way (Hugging Face ``generate`` with K return
sequences, and the lens pass on every full text).

Run: ``python benchmarks/bench_backpatch.py [--queries 20] [--layer-step 3] [--naive-sample 8] [--check-queries 794] [--ic-questions 8] [--ic-only | --checks-only]``.
"""
from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from layerbench import load_model  # noqa: E402
from layerbench.data import load_packaged, load_task_data  # noqa: E402
from layerbench.data.two_hop import CHECKS, mentions  # noqa: E402
from layerbench.evaluators.backpatch import answer_check, check_prompts, e1_last_token, layer_pairs, queries_of, run_checks, sweep_query  # noqa: E402
from layerbench.evaluators.consistency import ANSWER_CUE, cut_path, evaluate_consistency, question_prompts  # noqa: E402
from layerbench.families import EvaluatorContext  # noqa: E402
from layerbench.families.backpatch import BackpatchSettings  # noqa: E402
from layerbench.models.generation import ensure_padding, generate  # noqa: E402
from layerbench.models.residual import last_token_states, patch_positions, record_layers  # noqa: E402
from layerbench.specs import get_task  # noqa: E402


def naive_variant(handle, prompt: str, p: int, ls: int, lt: int, max_new_tokens: int) -> str:
    """From scratch: a clean pass for the source state, then the patched prompt and every greedy step, batch 1, no early stop."""
    model, tok = handle.model, handle.tokenizer
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad(), record_layers(handle, [ls]) as recorded:
        model(input_ids=ids)
    with torch.no_grad(), patch_positions(handle, torch.tensor([lt]), p, recorded[ls][0][:, p]):
        out = model(input_ids=ids, use_cache=True)
    cache, token, tokens = out.past_key_values, out.logits[:, -1].argmax(-1), []
    for _ in range(max_new_tokens):
        if token.item() == tok.eos_token_id:
            break
        tokens.append(token.item())
        with torch.no_grad():
            out = model(input_ids=token.view(1, 1), past_key_values=cache, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1)
    return tok.decode(tokens, skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-q4")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--layer-step", type=int, default=3)
    parser.add_argument("--naive-sample", type=int, default=8)
    parser.add_argument("--ic-questions", type=int, default=8)
    parser.add_argument("--check-queries", type=int, default=794, help="queries whose five checks are timed both ways (794: all packaged; the README's 52.9 s were measured on the 594 before the province chains)")
    parser.add_argument("--ic-only", action="store_true", help="only the internal-consistency comparison")
    parser.add_argument("--checks-only", action="store_true", help="only the checks' comparison")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    handle = load_model(args.model, device="cpu")
    if args.ic_only:
        return ic_side_by_side(handle, args.ic_questions)
    checks_side_by_side(handle, args.check_queries)
    if args.checks_only:
        return
    settings = BackpatchSettings(layer_step=args.layer_step)
    queries = queries_of(load_packaged("two-hop-queries", {"n": args.queries, "seed": 0}), "bench")
    pairs = layer_pairs(handle.n_layers, settings)
    rng = random.Random(0)

    ours_seconds = naive_seconds = 0.0
    n_variants = n_naive = agree = prefix = 0
    for q in queries:
        positions = {"e1-last": e1_last_token(handle, q.source_prompt, q.e1),
                     "prompt-last": len(handle.tokenizer(q.source_prompt)["input_ids"]) - 1}
        names = q.answers("e3")
        began = time.perf_counter()
        ours = sweep_query(handle, q.source_prompt, positions, pairs, names, settings.max_new_tokens, settings.batch_size)
        ours_seconds += time.perf_counter() - began
        n_variants += len(ours)
        for key in rng.sample(sorted(ours), args.naive_sample):
            position, ls, lt = key
            began = time.perf_counter()
            naive = naive_variant(handle, q.source_prompt, positions[position], ls, lt, settings.max_new_tokens)
            naive_seconds += time.perf_counter() - began
            n_naive += 1
            agree += mentions(naive, names) == mentions(ours[key], names)
            prefix += naive.startswith(ours[key])
    per_naive = naive_seconds / n_naive
    naive_total = per_naive * n_variants
    print(f"{args.model}: {len(queries)} queries x {len(pairs)} (ls, lt) pairs x 2 positions = {n_variants} patched generations "
          f"(layer step {args.layer_step}, {settings.max_new_tokens} new tokens)")
    print(f"  ours:  {ours_seconds:8.1f} s  ({ours_seconds / n_variants * 1000:.1f} ms per variant)")
    print(f"  naive: {per_naive * 1000:8.1f} ms per variant, measured on {n_naive} sampled variants; x {n_variants} = {naive_total:.1f} s")
    print(f"  naive / ours: {naive_total / ours_seconds:.1f}x   (goal: 10x)")
    print(f"  same verdict on {agree}/{n_naive} sampled variants; our text a prefix of the naive one on {prefix}/{n_naive}")

    ic_side_by_side(handle, args.ic_questions)


def checks_side_by_side(handle, n_queries: int) -> None:
    """The five checks of ``n_queries`` packaged queries, ours (:func:`run_checks`) against every prompt generated in data
    order in generate's default batches of 16; both must give every query the same verdict."""
    settings = get_task("backpatch-two-hop").settings
    queries = queries_of(load_packaged("two-hop-queries", {"n": n_queries, "seed": 0}), "bench")
    names_of, found = answer_check(settings)
    began = time.perf_counter()
    plain = {}
    for check in CHECKS:
        prompts = [check_prompts(q, settings.protocol)[check] for q in queries]
        texts = generate(handle, [prompt for prompt, _ in prompts], settings.max_new_tokens)
        plain[check] = [found(text[0], names_of(q, entity)) for text, q, (_, entity) in zip(texts, queries, prompts)]
    plain_seconds = time.perf_counter() - began
    began = time.perf_counter()
    ours = run_checks(handle, queries, settings)
    ours_seconds = time.perf_counter() - began
    differ = sum(int((ours[check] != plain[check]).sum()) for check in CHECKS)
    print(f"checks ({len(queries)} queries x {len(CHECKS)}, {settings.max_new_tokens} new tokens):")
    print(f"  ours (each distinct prompt once, length-sorted batches of 64): {ours_seconds:8.1f} s")
    print(f"  plain (every prompt, data order, batches of 16):              {plain_seconds:8.1f} s")
    print(f"  plain / ours: {plain_seconds / ours_seconds:.2f}x; verdicts that differ: {differ} of {len(queries) * len(CHECKS)}")


def naive_ic_model_work(handle, prompts: list[str], settings) -> None:
    """The model work of internal consistency the plain way: Hugging Face ``generate`` with K return sequences (K
    prefills of each few-shot prompt) and the lens pass on every full text (prompt + path) from scratch."""
    stops = ["answer is", "\n\n", "\nQ:"]
    tok = handle.tokenizer
    ensure_padding(handle)
    side, tok.padding_side = tok.padding_side, "left"
    sampled = []
    try:
        for start in range(0, len(prompts), max(1, 32 // settings.paths)):
            enc = tok(prompts[start : start + max(1, 32 // settings.paths)], return_tensors="pt", padding=True)
            torch.manual_seed(start)
            with torch.no_grad():
                ids = handle.model.generate(**enc, max_new_tokens=settings.max_new_tokens, num_return_sequences=settings.paths, do_sample=True,
                                            temperature=settings.temperature, top_p=settings.top_p, top_k=0, pad_token_id=tok.pad_token_id,
                                            stop_strings=stops, tokenizer=tok)
            texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            sampled += [texts[i : i + settings.paths] for i in range(0, len(texts), settings.paths)]
    finally:
        tok.padding_side = side
    greedy = generate(handle, prompts, settings.max_new_tokens, batch_size=16, stop_strings=stops)
    paths = [(q, cut_path(t)[0]) for q, texts in enumerate(sampled) for t in texts] + [(q, cut_path(t[0])[0]) for q, t in enumerate(greedy)]
    last_token_states(handle, [f"{prompts[q]} {cut}{ANSWER_CUE}" if cut else f"{prompts[q]}{ANSWER_CUE}" for q, cut in paths])


def ic_side_by_side(handle, n_questions: int) -> None:
    """Questions per minute of the internal-consistency task, ours (whole evaluator) against the plain way's model work alone."""
    spec = get_task("consistency-coinflip")
    data = load_task_data(spec, limit=n_questions + spec.settings.shots)
    _, _, prompts = question_prompts(data, spec.settings, spec.name)
    began = time.perf_counter()
    evaluate_consistency(EvaluatorContext(data, spec, 0, handle=handle))
    ours = (time.perf_counter() - began) / 60
    began = time.perf_counter()
    naive_ic_model_work(handle, prompts, spec.settings)
    naive = (time.perf_counter() - began) / 60
    print(f"internal consistency ({spec.name}, {len(prompts)} questions, K={spec.settings.paths}, {spec.settings.max_new_tokens} new tokens):")
    print(f"  ours (the whole evaluator, each prompt's prefill shared by its K samples and its paths' lens pass): {len(prompts) / ours:.1f} questions per minute")
    print(f"  plain (generate with K return sequences, lens on every full text; model work only): {len(prompts) / naive:.1f} questions per minute")
    print(f"  plain / ours time: {naive / ours:.2f}x")

if __name__ == "__main__":
    main()
