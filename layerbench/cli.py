"""The ``layerbench`` command: parses arguments and calls :mod:`layerbench.api`, nothing more.

Every user mistake (a bad option value, an unknown model or task, a
malformed spec) ends as one ``error:`` line on stderr and exit code 2.
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta

import click

from layerbench.choices import DEVICES, DTYPES, EXECUTORS, METRIC_DEVICES, POOLINGS, ROBUSTNESS, SITES
from layerbench.errors import UserError
from layerbench.run_config import RunConfig, split_names


class BatchSize(click.ParamType):
    """A positive integer or ``auto``."""

    name = "batch size"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"'{value}' is not a positive integer or 'auto'", param, ctx)
        return number


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="layerbench")
def app() -> None:
    """Layer-wise representation quality: every layer of every model from one forward pass."""


@app.command()
@click.option("--model", "-m", "models", multiple=True, required=True, help="Registry alias, Hugging Face id or local folder; repeat for several.")
@click.option("--revision", default=None, help="Hub branch, tag or commit of the model.")
@click.option("--tasks", "-t", "tasks", multiple=True, help="Comma-separated task names (see `layerbench list tasks`).")
@click.option("--suite", default=None, help="A named set of tasks (default: 'default').")
@click.option("--output", "-o", default="layerbench-results", show_default=True, type=click.Path(file_okay=False), help="Results folder.")
@click.option("--limit", type=click.IntRange(min=2), default=None, help="At most N examples per task (a seeded subsample).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds python, numpy, torch and every subsample.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True, help="auto: float32 on CPU, the checkpoint's dtype on GPUs.")
@click.option("--device-map", type=click.Choice(["auto"]), default=None, help="'auto' spreads a model too big for one device over all GPUs (needs accelerate).")
@click.option("--batch-size", type=BatchSize(), default="auto", show_default=True, help="Texts per forward pass, or 'auto' (largest that fits, backs off on out-of-memory).")
@click.option("--max-length", type=click.IntRange(min=1), default=None, help="Truncate inputs to N tokens (default: the suite's, else the task's, else the model's limit).")
@click.option("--overwrite", is_flag=True, help="Redo tasks whose results already exist.")
@click.option("--reference", is_flag=True, help="Allow writing into a reference results folder (one holding .layerbench-reference, as the committed results/ does).")
@click.option("--update", is_flag=True, help="Redo tasks whose results exist from another configuration (a changed task spec or option); skip those done with this one.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the activation cache.")
@click.option("--metrics", "metrics", multiple=True, help="Comma-separated label-free metrics to compute on every task (default: all; see `layerbench list metrics`).")
@click.option("--no-metrics", is_flag=True, help="Compute no label-free metrics (only the tasks' own scores).")
@click.option("--metric-samples", type=click.IntRange(min=2), default=None,
              help="Texts per task that token metrics (prompt entropy, curvature) and view metrics (InfoNCE, DiME, LiDAR) read [default: the suite's, else 512].")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None, help="Pool every task this way (default: each task's own).")
@click.option("--protocol", "protocols", multiple=True,
              help="Comma-separated protocols to run every task under: layerbench (ours), paper (each family's paper protocol), or one paper's "
                   "(`layerbench list families` names each family's) [default: the suite's, else each task's own]. Rows carry their protocol.")
@click.option("--site", "sites", multiple=True,
              help=f"Comma-separated capture sites of a layer's vector: {', '.join(SITES)} (residual: the blocks' outputs; normed: the final norm "
                   "on every layer; mlp-input: the input of each block's MLP); all from one forward pass [default: the protocol's, else the task's, else residual].")
@click.option("--robustness", "robustness", multiple=True,
              help=f"Comma-separated robustness variants of probe tasks, each adding rows: {', '.join(ROBUSTNESS)} (int8 needs bitsandbytes and a GPU).")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: in this process; ray: (model, task) jobs on a Ray cluster (pip install 'layerbench[ray]').")
@click.option("--address", default=None, help="Ray cluster to join: auto, or ray://host:port (default: start a local one). Needs --executor ray.")
@click.option("--gpus-per-job", type=click.FloatRange(min=0), default=1.0, show_default=True, help="GPUs per model worker on Ray (0.5: two models share a GPU).")
@click.option("--cpus-per-job", type=click.FloatRange(min=0), default=1.0, show_default=True, help="CPUs per model worker on Ray.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes evaluating the layers of probe and mteb tasks; rows do not depend on it [default: $LAYERBENCH_JOBS, else the cores available].")
@click.option("--layers", default=None, help="Only these layers, captured and evaluated: numbers and inclusive ranges, e.g. 0,12,20-24 [default: every layer].")
@click.option("--metrics-device", type=click.Choice(METRIC_DEVICES), default=None,
              help="Where the label-free metrics compute (torch; float64 where the device has it) [default: where the model runs].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def run(quiet: bool, no_cache: bool, no_metrics: bool, **options) -> None:
    """Run tasks on models; write tidy rows and a manifest per model under --output.

    --tasks takes task names (`layerbench list tasks`) and mteb:NAME for any mteb task (those need the network).
    """
    if options["metrics"] and no_metrics:
        raise click.UsageError("give --metrics or --no-metrics, not both")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    # Every other option is a RunConfig field of the same name (tests/test_cli.py checks that none is missing).
    config = RunConfig.of(**options | {"cache": not no_cache, "metrics": () if no_metrics else (options["metrics"] or None)})
    from layerbench import api  # here, not at import: --help and `list` do not import torch

    summary = api.run(config)
    done = sum(s == "done" for per in summary.status.values() for s in per.values())
    skipped = sum(s == "skipped" for per in summary.status.values() for s in per.values())
    click.echo(f"{done} task(s) run, {skipped} skipped, {summary.forward_passes} forward passes; results in {summary.output}/")
    click.echo(f"load them with: python -c \"import layerbench; print(layerbench.load_results('{summary.output}'))\"")


@app.group(invoke_without_command=True)
@click.pass_context
def cache(ctx) -> None:
    """The activation cache ($LAYERBENCH_ACTIVATION_CACHE): what it holds (no subcommand), or prune it."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(cache_info)


@cache.command(name="info")
def cache_info() -> None:
    """Where the cache is; per model its shards, entries (and superseded or unreadable copies) and bytes; the lines add up to the total."""
    from layerbench.capture.cache import ActivationCache, summarize
    from layerbench.config import activation_cache_location

    location = activation_cache_location()
    held = summarize(ActivationCache(location))
    click.echo(f"activation cache: {location}, {_size(held.bytes)} on disk"
               + (f"; written {held.oldest:%Y-%m-%d %H:%M} to {held.newest:%Y-%m-%d %H:%M} UTC" if held.oldest and held.newest else ""))
    header = f"  {'model':48} {'shards':>7} {'entries':>9} {'superseded':>11} {'unreadable':>11} {'size':>10}"
    click.echo(header)
    for model, part in [*held.by_model.items(), ("total", held.indexed)]:
        click.echo(f"  {model:48} {part.shards:>7} {part.entries:>9} {part.superseded:>11} {part.unreadable:>11} {_size(part.bytes):>10}")
    if held.unindexed[0]:
        click.echo(f"  {'not indexed (see below)':48} {held.unindexed[0]:>7} {'':>9} {'':>11} {'':>11} {_size(held.unindexed[1]):>10}")
    notes = []
    if held.indexed.superseded or held.indexed.unreadable:
        notes.append("superseded: older copies of entries written again; unreadable: entries of a missing or truncated shard. A read skips both; "
                     "`layerbench cache prune` removes the shards that hold nothing else")
    if held.unindexed[0]:
        notes.append("not indexed: shards being written, left by a killed run, or the old one-file-per-entry format; "
                     "`layerbench cache prune` removes those a day old and the old format's")
    for note in notes:
        click.echo(note)


@cache.command(name="prune")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=None, help="Remove shards written more than N days ago.")
@click.option("--max-size", default=None, help="Remove the oldest shards until the cache holds at most this much, e.g. 50G.")
@click.option("--model", "models", multiple=True, help="Remove the entries of this model (as `layerbench cache` names it); repeatable.")
@click.option("--all", "everything", is_flag=True, help="Remove every entry.")
@click.option("--dry-run", is_flag=True, help="List what would go (file, model, size, age, why), remove nothing.")
def cache_prune(older_than, max_size, models, everything, dry_run) -> None:
    """Remove whole shards (and those holding only superseded or unreadable entries, stale temporary files and the old format's
    files); merge the index into one file."""
    from datetime import datetime, timezone

    from layerbench.capture.cache import ActivationCache, prune
    from layerbench.config import activation_cache_location, parse_bytes

    if older_than is None and max_size is None and not models and not everything:
        raise click.UsageError("say what to remove: --older-than DAYS, --max-size SIZE, --model NAME or --all")
    limit = parse_bytes(max_size, "--max-size") if max_size is not None else None
    removals = prune(ActivationCache(activation_cache_location()), older_than, limit, models, everything, dry_run)
    if dry_run and removals:
        now = datetime.now(timezone.utc)
        click.echo(f"  {'file':44} {'model':40} {'size':>10} {'age':>7}  why")
        for removal in removals:
            click.echo(f"  {removal.name:44} {removal.model or '-':40} {_size(removal.bytes):>10} {_age(now - removal.written):>7}  {removal.reason}")
    click.echo(f"{'would remove' if dry_run else 'removed'} {len(removals)} file(s), {_size(sum(r.bytes for r in removals))}")


def _age(elapsed: timedelta) -> str:
    """A timedelta as people read an age: 45 s, 12 min, 5 h, 3 d."""
    seconds = max(0.0, elapsed.total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"


def _size(n: int) -> str:
    """Bytes as people read them: 512 B, 4.4 KB, 1.2 GB (powers of 1024)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


@app.group(name="list")
def list_() -> None:
    """List registered models, tasks, task families or metrics."""


@list_.command(name="models")
def list_models() -> None:
    """Models in the registry (any Hub id or local folder works too)."""
    from layerbench.models import registry_entries

    for entry in registry_entries():
        aliases = f" (aliases: {', '.join(entry.aliases)})" if entry.aliases else ""
        click.echo(f"{entry.name}{aliases}\n    {entry.notes}")


def _source_name(spec) -> str:
    data = spec.data
    return f"{data.source}:" + str(next(getattr(data, f) for f in ("dataset", "generator", "task", "path", "url") if hasattr(data, f)))


@list_.command(name="tasks")
@click.option("--family", default=None, help="Only tasks of this family (see `layerbench list families`).")
def list_tasks(family) -> None:
    """Tasks and suites: name, family, size (items evaluated) and data source."""
    from layerbench.data import task_sizes
    from layerbench.families import get_family
    from layerbench.specs import all_suites, all_tasks, malformed_specs

    for problems in malformed_specs().values():  # each blocks only its own task or suite
        click.echo(f"warning: left out, malformed: {problems}", err=True)
    if family is not None:
        get_family(family)  # an unknown family is an error, not an empty list

    specs = [spec for spec in all_tasks().values() if not family or spec.family == family]
    sizes = task_sizes(specs)
    click.echo(f"{'task':36} {'family':10} {'size':>7}  source")
    for spec in specs:
        click.echo(f"{spec.name:36} {spec.family:10} {sizes[spec.name]:>7}  {_source_name(spec)}")
    click.echo("")
    for suite in all_suites().values():
        extra = [f"{suite.limit} examples each" if suite.limit else "", f"inputs truncated to {suite.max_length} tokens" if suite.max_length else "", "needs the network" if suite.needs_network else ""]
        click.echo(f"suite {suite.name:20} {len(suite.tasks):3} tasks{''.join(f'; {e}' for e in extra if e)}: {', '.join(suite.tasks)}")


@app.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--online", is_flag=True, help="Also check that every network source resolves to what its spec pins (downloads url files; needs the network).")
@click.option("--suite", default=None, help="With --online: check the network sources of this suite's tasks.")
@click.option("--tasks", "-t", "tasks", multiple=True, help="With --online: check these tasks' network sources (comma-separated).")
def validate(paths, online, suite, tasks) -> None:
    """Check task and suite specs (files, or folders of them with their suites/); exit 2 if any is malformed.

    With --online, also check each network source (a pinned file's digest and
    labels, a Hub data set's revision, an mteb task's data set) of the given
    specs, --suite or --tasks.
    """
    from layerbench.validation import validate_specs

    if not (paths or (online and (suite or tasks))):
        raise click.UsageError("give spec files or folders" + (", --suite or --tasks" if online else "") + " to validate")
    if (suite or tasks) and not online:
        raise click.UsageError("--suite and --tasks go with --online")
    found = [found for path in paths for found in validate_specs(path)]
    for _, problem in found:
        click.echo(f"error: {problem}", err=True)
    if found:
        raise UserError(f"{len(found)} problem(s) in {len({file for file, _ in found})} spec file(s)")
    if paths:
        click.echo(f"all specs valid: {', '.join(paths)}")
    if online:
        _validate_online(paths, suite, list(split_names(tasks)))


def _validate_online(paths, suite, tasks) -> None:
    """Check the network sources of the specs under ``paths``, of ``suite`` and of ``tasks``; exit 2 if any does not resolve."""
    from pathlib import Path

    from layerbench.api import resolve_tasks
    from layerbench.data.online import check_online, is_network_source
    from layerbench.specs import load_task_file

    specs = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.glob("*.yaml"))
        specs += [load_task_file(f) for f in files if f.parent.name != "suites"]
    if suite or tasks:
        specs += resolve_tasks(tasks or None, suite)[0]
    network = [spec for spec in specs if is_network_source(spec)]
    if not network:
        click.echo("no network sources to check")
        return
    failed = 0
    for spec in network:
        try:
            click.echo(f"ok: {spec.name}: {check_online(spec)}")
        except UserError as exc:
            failed += 1
            click.echo(f"error: {spec.name}: {exc}", err=True)
    if failed:
        raise UserError(f"{failed} of {len(network)} network source(s) do not resolve")
    click.echo(f"all {len(network)} network source(s) resolve")


@app.command()
@click.argument("base", type=click.Path())
@click.argument("candidate", type=click.Path())
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.01, show_default=True, help="The smallest drop that counts, in each metric's units.")
@click.option("--z", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="A drop must also pass a one-sided test at z standard deviations (z = 2: p <= 0.023): paired over the items both runs recorded "
                   "(McNemar, paired bootstrap; Holm over a task's layers), else the rows' standard errors and the base's seed noise (see `layerbench noise`).")
@click.option("--tasks", "-t", "tasks", multiple=True, help="Comma-separated tasks to compare (default: all shared).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Also write every compared row (diagnostics too) to this CSV file, and the printed report, ending in its PASS or FAIL line, "
                   "beside it as <name>.summary.txt.")
def compare(base, candidate, tolerance, z, tasks, report) -> None:
    """Gate CANDIDATE results against BASE on main scores and headlines: exit 1 if one dropped beyond tolerance and noise, 0 otherwise, 2 on bad input.

    Rows whose item records both runs hold (<model>/items/) are tested paired, item by item; the report says which test each row had.
    """
    from pathlib import Path

    import pandas as pd

    from layerbench.compare import compare_results, describe_platforms, format_report, layer_moves, read_seed_noise
    from layerbench.results import load_items, load_results, read_manifests
    from layerbench.results.sketches import load_sketches

    base_rows, candidate_rows = load_results(base), load_results(candidate)
    # Item records pair the rows; a folder without them (runs before they existed) is compared unpaired, and the report says so.
    rows = compare_results(base_rows, candidate_rows, tolerance=tolerance, z=z, tasks=list(split_names(tasks)) or None, noise=read_seed_noise(base),
                           base_items=load_items(base, missing_ok=True), candidate_items=load_items(candidate, missing_ok=True))
    compared = set(rows.model) if "model" in rows else None  # matched by model: only the models both hold
    labels = [f"{path} ({', '.join(sorted(set(frame.model)))})" + (f"; compared: {', '.join(sorted(compared))}" if compared and compared != set(frame.model) else "")
              for path, frame in ((base, base_rows), (candidate, candidate_rows))]
    manifests = [[m for runs in read_manifests([Path(folder)]).values() for m in runs] for folder in (base, candidate)]
    chosen = list(split_names(tasks))
    base_sketches, candidate_sketches = ([s for s in load_sketches(folder) if not chosen or s.task in chosen] for folder in (base, candidate))
    moves = layer_moves(base_sketches, candidate_sketches, tolerance)
    text = format_report(rows, tolerance, z, base_label=labels[0], candidate_label=labels[1], platforms=describe_platforms(*manifests), moves=moves)
    click.echo(text)
    if report:
        pd.concat([rows, moves], ignore_index=True).to_csv(report, index=False)
        Path(report).with_suffix(".summary.txt").write_text(text + "\n")
    if (rows.verdict == "regression").any():
        raise click.exceptions.Exit(1)


@app.command()
@click.argument("base", type=click.Path(exists=True, file_okay=False))
@click.argument("reruns", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def noise(base, reruns) -> None:
    """Measure BASE's run-to-run noise from RERUNS (the same models and tasks run with other --seed values); store it in BASE for `compare`.

    Writes BASE/seed-noise.csv: each row's standard deviation over the runs, which `compare` adds to the
    standard errors when it gates a candidate against BASE.
    """
    from layerbench.compare import NOISE_FILE, seed_noise
    from layerbench.results import load_results

    spread = seed_noise([load_results(base), *(load_results(path) for path in reruns)])
    spread.to_csv(f"{base}/{NOISE_FILE}", index=False)
    moving = spread[spread.seed_sd > 0]
    click.echo(f"{len(spread)} rows in {1 + len(reruns)} runs; {len(moving)} move with the seed "
               f"(largest sd {spread.seed_sd.max():.4f}); written {base}/{NOISE_FILE}")


@app.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", default="site", show_default=True, type=click.Path(file_okay=False), help="Folder to write the site into.")
def leaderboard(results, output) -> None:
    """Build the static leaderboard site from result folders alone (opens from file:// with no network)."""
    from layerbench.site import build_site

    index = build_site([*results], output)
    click.echo(f"site written: {index} (open it in a browser, or serve {output}/ from any static host)")


@app.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--model", "-m", default=None, help="Pick for this model's tasks (a layer per task, and one for the model).")
@click.option("--task", "-t", default=None, help="Pick for this task only.")
@click.option("--method", default=None, help="The rule that picks (`layerbench pick RESULTS` scores them all) [default: learned-depth].")
@click.option("--protocol", default="layerbench", show_default=True, help="The protocol whose curves are read.")
@click.option("--output", "-o", default="layer-selection", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the CSV files (scores, scores by family, picks).")
def pick(results, model, task, method, protocol, output) -> None:
    """Which layer, with no labels: recommend a layer per model and task from label-free metrics alone.

    With no --model or --task: score every method against each (model, task)'s best layer and print the table.
    """
    from pathlib import Path

    import pandas as pd

    from layerbench import selection
    from layerbench.results import load_results

    rows = pd.concat([load_results(p) for p in results], ignore_index=True)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if model is None and task is None:
        result = selection.evaluate(rows, protocol=protocol, methods=[method, "last", "oracle"] if method else None)
        result.summary.to_csv(out / "scores.csv", index=False)
        result.by_family.to_csv(out / "scores-by-family.csv", index=False)
        result.picks.to_csv(out / "picks.csv", index=False)
        click.echo(selection.format_summary(result.summary))
        click.echo(f"{result.picks[['model', 'task']].drop_duplicates().shape[0]} (model, task) curves of {result.picks.model.nunique()} models; "
                   f"regret: the oracle's score (the honest best layer) minus the picked layer's; gain: over the last layer; 95% bootstrap "
                   f"intervals over models and tasks.\nwritten {out}/scores.csv, scores-by-family.csv, picks.csv")
        return
    picks = selection.recommend(rows, model=model, task=task, method=method or selection.DEFAULT_METHOD, protocol=protocol)
    picks.to_csv(out / "picks.csv", index=False)
    click.echo(f"rule: {picks.rule.iloc[0]}")
    click.echo(selection.format_picks(picks))
    for row in selection.model_layer(picks).itertuples():
        click.echo(f"{row.model}: layer {row.layer} of {int(picks[picks.model == row.model].last_layer.max())} (depth {row.depth:.2f}), "
                   f"the median depth of its {row.curves} task picks")
    click.echo(f"written {out}/picks.csv")


@list_.command(name="families")
def list_families() -> None:
    """Task families: name, what the evaluator reads, settings (with defaults), description."""
    from layerbench.families import all_families

    for family in all_families().values():
        knobs = ", ".join(f"{name}={field.default!r}" for name, field in family.settings.model_fields.items())
        reads = {"states": "pooled states", "model": "the model (causal LMs only)" if family.causal_lm_only else "the model", "nothing": "nothing (metrics only)"}[family.reads]
        protocols = ", ".join(["layerbench (ours)", *(f"{p.name} ({p.reference.split(';')[0]})" for p in family.protocols)])
        click.echo(f"{family.name:12} reads {reads}\n    {family.description}\n    settings: {knobs or 'none'}\n    protocols: {protocols}")


@list_.command(name="metrics")
def list_metrics() -> None:
    """Label-free metrics: name, input kind, direction, unit, cost."""
    from layerbench.metrics import list_metrics as metrics

    direction = {True: "higher is better", False: "lower is better", None: "descriptive"}
    click.echo(f"{'name':27} {'input':7} {'direction':17} {'unit':11} description (cost per layer)")
    for info in metrics():
        click.echo(f"{info.name:27} {info.input_kind:7} {direction[info.higher_is_better]:17} {info.unit:11} {info.description} ({info.cost})")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; user errors become one line and exit code 2."""
    try:
        code = app.main(args=argv, prog_name="layerbench", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except click.Abort:
        click.echo("interrupted; finished tasks are kept and a re-run resumes", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted; finished tasks are kept and a re-run resumes", err=True)
        return 130
    return code if isinstance(code, int) else 0  # a command's explicit exit code (compare: 1 on a regression)


if __name__ == "__main__":
    sys.exit(main())
