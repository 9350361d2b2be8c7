"""``layerbench validate --online``: does each network source of a task resolve to what its spec pins?

- ``url``: the file is downloaded, checked against the pinned digests,
  parsed, and its labels checked against the spec's (all of
  :func:`layerbench.data.load_task_data`).
- ``hub``: the data set exists at the pinned revision (a metadata call; nothing is downloaded).
- ``mteb`` (mteb's own tasks): the task exists and its data set exists at the revision mteb pins.

Offline sources (packaged, generator, local files, layerbench's offline mteb
tasks) are not network sources and are left to ``layerbench validate``.
"""
from __future__ import annotations

from layerbench.errors import UserError
from layerbench.specs.schema import HubSource, MtebSource, TaskSpec, UrlSource


def is_network_source(spec: TaskSpec) -> bool:
    """Whether the task's data needs the network."""
    if isinstance(spec.data, (UrlSource, HubSource)):
        return True
    if isinstance(spec.data, MtebSource):
        from layerbench.data.mteb_tasks import OFFLINE_TASKS

        return spec.data.task not in OFFLINE_TASKS
    return False


def _hub_revision_exists(path: str, revision: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().dataset_info(path, revision=revision)
    except (HfHubHTTPError, OSError, ValueError) as exc:  # not found, revision unknown, offline, refused
        raise UserError(f"Hub data set {path}@{revision} does not resolve ({str(exc).splitlines()[0]})") from exc


def check_online(spec: TaskSpec) -> str:
    """What was checked, in a few words, when the task's network source resolves; a :class:`UserError` saying why when it does not."""
    source = spec.data
    if isinstance(source, UrlSource):
        from layerbench.data import load_task_data

        data = load_task_data(spec)
        labels = sorted({str(v) for v in data.labels}) if data.labels is not None else []
        return f"{source.url}: digest as pinned, {len(data)} items" + (f", labels {', '.join(labels)}" if labels else "")
    if isinstance(source, HubSource):
        _hub_revision_exists(source.path, source.revision)
        return f"Hub data set {source.path}@{source.revision} exists"
    if isinstance(source, MtebSource):
        from layerbench.data.mteb_tasks import get_mteb_task

        meta = get_mteb_task(source.task, source.options, languages=source.languages).metadata
        _hub_revision_exists(meta.dataset["path"], meta.dataset["revision"])
        return f"mteb task {meta.name}: Hub data set {meta.dataset['path']}@{meta.dataset['revision'][:12]} exists"
    raise UserError(f"task '{spec.name}' reads no network source")
