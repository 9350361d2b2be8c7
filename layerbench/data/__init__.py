"""Data sources. Each returns a TextDataset with its provenance; :func:`load_task_data` picks one from a task spec."""
from __future__ import annotations

import dataclasses

from layerbench.data import cldr, consistency_files, probe_files, similarity_texts, two_hop  # noqa: F401  (register the CLDR prompts, the papers' row formats, the similarity texts and the two-hop-queries data set)
from layerbench.data.dataset import TextDataset
from layerbench.data.generators import GENERATORS, load_generated
from layerbench.data.local import load_local
from layerbench.data.packaged import PACKAGED, load_packaged, packaged_dataset
from layerbench.errors import UserError
from layerbench.families import get_family
from layerbench.specs.schema import GeneratorSource, HubSource, LocalSource, MtebSource, PackagedSource, TaskSpec, UrlSource

__all__ = ["GENERATORS", "PACKAGED", "TextDataset", "load_generated", "load_local", "load_packaged", "load_task_data", "packaged_dataset", "task_size", "task_sizes"]


def load_task_data(spec: TaskSpec, limit: int | None = None, seed: int = 0) -> TextDataset:
    """The texts (put into the spec's prompt template) and labels of a task, at most ``limit`` of them.

    The subsample is stratified by label and seeded with ``seed``; an mteb
    task takes the limit into its own data (pairs, documents) instead.

    Raises:
        UserError: the source cannot be read, the data is empty, is classified but has one label, or a label is not among the spec's ``labels``.
    """
    source = spec.data
    if isinstance(source, MtebSource):
        from layerbench.data.mteb_tasks import load_mteb  # imports mteb (seconds): only when asked

        data = load_mteb(source.task, source.options, limit, seed, source.languages)
    else:
        if isinstance(source, PackagedSource):
            data = load_packaged(source.dataset, source.options)
        elif isinstance(source, GeneratorSource):
            data = load_generated(source.generator, source.options)
        elif isinstance(source, LocalSource):
            data = load_local(source)
        elif isinstance(source, UrlSource):
            from layerbench.data.remote import load_url

            data = load_url(source)
        elif isinstance(source, HubSource):
            from layerbench.data.remote import load_hub

            data = load_hub(source)
        else:  # pragma: no cover - the schema admits no other source
            raise UserError(f"task '{spec.name}': unknown data source {source!r}")
        data = data.subsample(limit, seed)
        if spec.prompt != "{text}":
            data = dataclasses.replace(data, texts=[spec.prompt.replace("{text}", text) for text in data.texts])
    if len(data) == 0:
        raise UserError(f"task '{spec.name}': its data set is empty")
    if data.labels is not None and get_family(spec.family).classes and len({str(v) for v in data.labels}) < 2:
        kept = f" (of the {limit} examples kept)" if limit is not None else ""
        raise UserError(f"task '{spec.name}': its data has a single label {str(data.labels[0])!r}{kept}; a labelled task needs at least two")
    if spec.labels is not None and data.labels is not None:
        allowed = {str(v) for v in spec.labels}
        unknown = sorted({str(v) for v in data.labels} - allowed)
        if unknown:
            raise UserError(f"task '{spec.name}': labels {unknown} are not among the spec's labels {spec.labels}")
    return data


def task_size(spec: TaskSpec) -> str:
    """How many items a task evaluates, for listings: texts, or an mteb task's pairs, test texts or queries ("network" when it needs the network)."""
    source = spec.data
    if isinstance(source, (UrlSource, HubSource)):
        return "network"
    if isinstance(source, MtebSource):
        from layerbench.data.mteb_tasks import OFFLINE_TASKS, evaluation_items, get_mteb_task

        return str(evaluation_items(get_mteb_task(source.task, source.options))) if source.task in OFFLINE_TASKS else "network"
    return str(len(load_task_data(spec)))


def task_sizes(specs: list[TaskSpec]) -> dict[str, str]:
    """:func:`task_size` of each spec by name, memoised in the cache folder.

    Sizing an offline mteb task builds it with mteb (seconds to import), so
    ``layerbench list tasks`` would take longer than importing torch. The memo
    is keyed by the spec and every installed distribution's version (the data
    comes from installed packages), so any change to either sizes it again.
    """
    from importlib.metadata import distributions

    from layerbench.fingerprint import hash_value, read_memo, write_memo

    installed = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
    keys = {spec.name: hash_value([spec.model_dump(), installed]) for spec in specs}
    memo = read_memo("task-sizes.json")
    missing = [spec for spec in specs if keys[spec.name] not in memo]
    for spec in missing:
        memo[keys[spec.name]] = task_size(spec)
    if missing:
        write_memo("task-sizes.json", memo)
    return {spec.name: memo[keys[spec.name]] for spec in specs}
