"""Label-free layer-picking rules as pure functions of one (model, task)'s per-layer curves.

Every rule takes the layer numbers (shape ``(L,)``, increasing) and, where it reads one, a label-free metric's values at
those layers (shape ``(L,)``, NaN where the metric could not be computed), and returns one of the given layer numbers.
None of them reads a label or a task score.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import find_peaks

# A peak of an intrinsic-dimension profile counts when it stands this share of the profile's range above the
# surrounding valleys (scipy's prominence): TwoNN on a few hundred points wobbles by a few per cent from layer to layer.
PEAK_PROMINENCE = 0.1


def last_layer(layers: np.ndarray) -> int:
    """The last layer: what a user takes by default."""
    return int(np.max(layers))


def middle_layer(layers: np.ndarray) -> int:
    """The layer nearest half the depth, ``round(L_max / 2)`` (the lower one on a tie)."""
    return layer_at_depth(layers, 0.5)


def layer_at_depth(layers: np.ndarray, depth: float) -> int:
    """The layer nearest the relative depth ``depth`` in [0, 1] (``layer / L_max``), the lower one on a tie."""
    layers = np.asarray(layers)
    target = depth * np.max(layers)
    return int(layers[np.argmin(np.abs(layers - target) + 1e-9 * layers)])


def extreme_layer(layers: np.ndarray, values: np.ndarray, highest: bool) -> int:
    """The layer where ``values`` is highest (``highest``) or lowest, the earliest on a tie; the last layer where
    every value is NaN."""
    values = np.asarray(values, float)
    if np.isnan(values).all():
        return last_layer(layers)
    signed = values if highest else -values
    return int(np.asarray(layers)[np.nanargmax(signed)])


def smooth3(values: np.ndarray) -> np.ndarray:
    """A 3-layer moving average (2 layers at the ends), NaN gaps filled by linear interpolation first: shape of ``values``."""
    values = np.asarray(values, float)
    known = ~np.isnan(values)
    if not known.any():
        return values
    index = np.arange(len(values))
    filled = np.interp(index, index[known], values[known])
    padded = np.concatenate([[np.nan], filled, [np.nan]])
    return np.nanmean(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def prominent_peaks(values: np.ndarray, prominence: float = PEAK_PROMINENCE) -> np.ndarray:
    """Indices of the local maxima of ``values`` (smoothed by :func:`smooth3`) whose prominence is at least
    ``prominence`` times the smoothed curve's range, the first layer never one; the global maximum when none is."""
    curve = smooth3(values)
    span = float(np.nanmax(curve) - np.nanmin(curve))
    # Padded so that a maximum at the last layer counts as a peak (a profile rising to the end) and one at the first does
    # not: a high ID at the input (token embeddings) that falls away is where the profile starts, not its peak.
    padded = np.concatenate([[np.inf], curve, [-np.inf]])
    peaks, _ = find_peaks(padded, prominence=max(prominence * span, 1e-12))
    peaks = peaks - 1
    return peaks if len(peaks) else np.array([int(np.nanargmax(curve))])


def id_minimum_after_first_peak(layers: np.ndarray, intrinsic_dimension: np.ndarray) -> int:
    """Valeriani et al. (NeurIPS 2023): the layer at the intrinsic dimension's minimum after its first peak.

    The first prominent peak of the smoothed ID profile (:func:`prominent_peaks`), then the lowest raw ID between it and
    the next prominent peak (or the last layer): the "relative minimum" of the profile where, in their protein and image
    transformers, the most semantic representations lie. A profile without a peak before its end gives the last layer.
    """
    values = np.asarray(intrinsic_dimension, float)
    if np.isnan(values).all():
        return last_layer(layers)
    peaks = prominent_peaks(values)
    start = int(peaks[0])
    stop = int(peaks[1]) if len(peaks) > 1 else len(values) - 1
    window = smooth3(values)[start:stop + 1]
    return int(np.asarray(layers)[start + int(np.nanargmin(window))])


def id_peak_onset(layers: np.ndarray, intrinsic_dimension: np.ndarray) -> int:
    """Cheng et al. (ICLR 2025): the onset of the high-dimensional phase, the first layer at the start of the ID peak.

    Operationally (their paper reads the onset off the profile): the first layer, between the lowest ID before the first
    prominent peak and that peak, whose smoothed ID has risen half-way from that low to the peak's height.
    """
    values = np.asarray(intrinsic_dimension, float)
    if np.isnan(values).all():
        return last_layer(layers)
    curve = smooth3(values)
    peak = int(prominent_peaks(values)[0])
    low = int(np.nanargmin(curve[:peak + 1]))
    half = curve[low] + 0.5 * (curve[peak] - curve[low])
    risen = np.flatnonzero(curve[low:peak + 1] >= half)
    return int(np.asarray(layers)[low + int(risen[0])])
