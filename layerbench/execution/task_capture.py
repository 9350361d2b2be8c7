"""One task's capture: the texts it runs, the poolings and sites its variants need, and the batched passes that give them.

One capture per pooling serves every variant and part of a task's work: all their sites, the task's texts, their
noisy copies, the augmented views of the metric sample, and the per-prompt kernels on that sample's token states go
through the same batched forward passes (:class:`TaskTexts`). A precision variant (robustness) is one more capture
of the task's texts with the model loaded in that precision.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerbench.capture import Capture, CaptureRequest, CaptureStats, SiteCapture, capture_layers
from layerbench.data.augment import make_views, noise_prefix
from layerbench.data.dataset import TextDataset, sample_indices
from layerbench.execution.variants import Variant, WorkItem
from layerbench.families import Family
from layerbench.metrics.suite import MetricPlan
from layerbench.models import ModelHandle
from layerbench.results.manifest import Part
from layerbench.run_config import RunConfig


@dataclass(frozen=True)
class TaskTexts:
    """Every text one task's capture runs, as one list, and where each part of it lies.

    The capture sees ``all``: the task's texts (N), their noisy copies (N
    more, for the ``noise`` robustness variant), then V augmented views of
    each of the S texts sampled for the metrics (S x V). The accessors cut a
    site's pooled states ``[K, len(all), D]`` back into those parts.
    """

    data: TextDataset
    noise: list[str]
    sample: list[int]
    n_views: int
    views: list[str]

    @property
    def all(self) -> list[str]:
        return self.data.texts + self.noise + self.views

    def clean(self, pooled: np.ndarray) -> np.ndarray:
        """``[K, N, D]``: the task's own texts."""
        return pooled[:, : len(self.data)]

    def noisy(self, pooled: np.ndarray) -> np.ndarray | None:
        """``[K, N, D]``: the noisy copies, or None when the noise variant is not asked for."""
        n = len(self.data)
        return pooled[:, n : 2 * n] if self.noise else None

    def view_states(self, pooled: np.ndarray) -> np.ndarray | None:
        """``[K, S, V, D]``: the views of the metric sample, or None when no view metric is planned."""
        if not self.n_views:
            return None
        return pooled[:, len(self.data) + len(self.noise) :].reshape(pooled.shape[0], len(self.sample), self.n_views, -1)


def task_texts(data: TextDataset, config: RunConfig, plan: MetricPlan, noise: bool, metrics: bool) -> TaskTexts:
    """The texts of one task's capture: its texts, their noisy copies if ``noise``, the views of the metric sample if ``metrics`` needs them."""
    noisy = [noise_prefix(text, config.seed) + text for text in data.texts] if noise else []
    sample = sample_indices(len(data), config.metric_samples, config.seed).tolist() if metrics and plan.needs_sample else []
    n_views = plan.n_views if sample else 0
    views = [v for per_text in make_views([data.texts[i] for i in sample], n_views, config.seed) for v in per_text] if n_views else []
    return TaskTexts(data, noisy, sample, n_views, views)


@dataclass
class TaskCapture:
    """What one task's capture is asked for (:func:`plan_capture`) and, once :meth:`run`, what it gave.

    Attributes:
        texts: the texts of the capture.
        pooling_of: variant suffix -> the pooling its states are captured with.
        sites_of: pooling -> the sites captured with it (a model-reading family captures only for its metrics).
        robustness: the robustness variants scored (``noise``, ``bfloat16``, ``int8``), where the family takes them.
        kernels: the per-prompt metric kernels run on the sample's token states (None: no sample).
        captures: pooling -> its capture.
        precision: (robustness variant, pooling) -> the capture of the task's texts by the model in that precision.
        max_length: the task's truncation (``--max-length`` wins).
        labels: (variant label, pooling) of each variant, for :meth:`describe`.
        kernel_seconds: time spent in the kernels inside the passes (counted as the metrics', not the capture's).
    """

    texts: TaskTexts
    pooling_of: dict[str, str]
    sites_of: dict[str, list[str]]
    robustness: list[str]
    kernels: dict[str, Any] | None
    max_length: int | None = None
    labels: list[tuple[str, str]] = field(default_factory=list)
    captures: dict[str, Capture] = field(default_factory=dict)
    precision: dict[tuple[str, str], Capture] = field(default_factory=dict)
    kernel_seconds: float = 0.0

    def describe(self, n_texts: int, n_layers: int, layers: Sequence[int] | None) -> str:
        """The line the run prints before the passes: texts, layers, variants, robustness, the metric sample."""
        return (f"{n_texts} texts, " + (f"{len(layers)} of {n_layers + 1} layers" if layers else f"{n_layers + 1} layers") + "; "
                + "; ".join(f"{label} ({pooling} pooling)" for label, pooling in self.labels)
                + (f"; robustness variants {', '.join(self.robustness)}" if self.robustness else "")
                + (f"; metrics on {len(self.texts.sample)} sampled texts, {self.texts.n_views} augmented views each" if self.texts.sample else ""))

    def run(self, handle: ModelHandle, precision_handles: dict[str, ModelHandle], config: RunConfig, stats: CaptureStats) -> dict[str, float]:
        """Run every capture; returns ``{"capture": seconds}`` (the kernels' time left out, in :attr:`kernel_seconds`)."""
        began, kernel_seconds = time.perf_counter(), stats.per_prompt_seconds
        max_length, layers = config.max_length or self.max_length, config.layers or None
        for pooling, sites in self.sites_of.items():
            self.captures[pooling] = capture_layers(handle, CaptureRequest(self.texts.all, pooling=pooling, batch_size=config.batch_size, max_length=max_length, cache=config.cache, per_prompt=self.kernels, per_prompt_texts=self.texts.sample, sites=sites, layers=layers), stats=stats)
        for r in self.robustness:
            for pooling, sites in self.sites_of.items():
                if r in precision_handles:
                    self.precision[(r, pooling)] = capture_layers(precision_handles[r], CaptureRequest(self.texts.data.texts, pooling=pooling, batch_size=config.batch_size, max_length=max_length, cache=config.cache, sites=sites, layers=layers), stats=stats)
        self.kernel_seconds = stats.per_prompt_seconds - kernel_seconds
        return {"capture": time.perf_counter() - began - self.kernel_seconds}

    def site(self, variant: Variant) -> SiteCapture:
        """The capture of a variant's site, with its pooling."""
        return self.captures[self.pooling_of[variant.suffix]].sites[variant.site]

    def states(self, variant: Variant) -> dict[str, np.ndarray]:
        """A states-reading evaluator's input: ``clean`` (and ``noise``, and each precision variant) -> pooled states ``[K, N, D]``."""
        pooled = self.site(variant).pooled
        states = {"clean": self.texts.clean(pooled)}
        noisy = self.texts.noisy(pooled)
        if noisy is not None:
            states["noise"] = noisy
        pooling = self.pooling_of[variant.suffix]
        return states | {r: self.precision[(r, pooling)].sites[variant.site].pooled for r in self.robustness if (r, pooling) in self.precision}


def plan_capture(data: TextDataset, config: RunConfig, plan: MetricPlan, family: Family, work: list[WorkItem], default_pooling: str,
                 max_length: int | None = None) -> TaskCapture:
    """What one task's capture must give its ``work``: each variant's pooling, each pooling's sites, the robustness variants, the texts
    (``max_length``: the task spec's truncation)."""
    reads_states = family.reads == "states"
    pooling_of = {item.variant.suffix: item.variant.capture_pooling(default_pooling) for item in work}
    with_scores = any(Part.SCORES in item.parts for item in work)
    robustness = [r for r in config.robustness if family.robustness] if with_scores and reads_states else []
    texts = task_texts(data, config, plan, "noise" in robustness, any(Part.METRICS in item.parts for item in work))
    sites_of: dict[str, list[str]] = {}
    for item in work:
        v = item.variant
        if Part.METRICS in item.parts or reads_states:
            sites = sites_of.setdefault(pooling_of[v.suffix], [])
            if v.site not in sites:
                sites.append(v.site)
    return TaskCapture(texts, pooling_of, sites_of, robustness, plan.kernels if texts.sample else None, max_length,
                       labels=[(item.variant.label, pooling_of[item.variant.suffix]) for item in work])
