"""The greedy next token from raw last-layer states, the unembedding's full product computed only where it can win.

Greedy decoding takes ``argmax_v (W_U · norm(h))_v``. For Gemma 3's 262,144
tokens that product is 63% of a decoding step's arithmetic, and only its
maximum is read. :class:`GreedyReadout` first computes every logit from
bfloat16 copies of ``norm(h)`` and ``W_U`` (about 5x faster on a CPU with
AMX, and on a GPU), bounds their error, and computes in float32 only the
tokens whose approximate logit comes within twice that bound of the best:
the true argmax is always among them.

The bound: rounding ``x = norm(h)`` and a row ``w`` of ``W_U`` to bfloat16
(unit roundoff ``u = 2**-8``) changes each product ``x_i w_i`` by at most
``(2u + u**2)|x_i w_i|``; the float32 accumulation adds at most ``K 2**-24``
of ``sum |x_i w_i|`` (``K`` the width); the bfloat16 result is rounded once
more (``u`` of ``|logit| <= sum |x_i w_i|``); and the float32 logit it stands
for carries the same accumulation error. Together under ``4u sum |x_i w_i|
<= 4u ||x|| max_v ||w_v||`` (Cauchy-Schwarz) for widths up to 2**14. If ``v*``
is the argmax and ``b`` the token of the best approximate logit, then
``approx(v*) >= logit(v*) - r >= logit(b) - r >= approx(b) - 2r``.

Where the bfloat16 product is not fast (a CPU without AMX), the vocabulary
is small (the float32 product is then as fast as the bounded one), or the
head is not a plain product (a bias, a final soft-capping), the logits are
computed in full, as the model computes them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from layerbench.errors import UserError
from layerbench.models.loading import ModelHandle
from layerbench.models.residual import lens_logits

_BOUND = 4 * 2.0**-8  # the relative error bound of the module docstring
# Below this many tokens the float32 product is as fast as the bfloat16 one and its passes over the logits (measured with
# 128 rows on a 2-core Xeon with AMX: SmolLM2's 49,152 tokens 34 ms either way; Gemma 3's 262,144: 232 ms full, 141 bounded).
_BOUNDED_FROM_VOCABULARY = 100_000


def fast_bfloat16(device: torch.device) -> bool:
    """Whether a bfloat16 matrix product beats float32 on ``device`` and accumulates in float32 as the bound assumes (a CPU with
    AMX tiles; a GPU where cuBLAS is told not to reduce in bfloat16)."""
    if device.type == "cuda":
        return not torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    return device.type == "cpu" and bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


class GreedyReadout:
    """The model's greedy choice from raw residual states of its last layer (the module docstring says how).

    Attributes:
        prefiltered: whether the bfloat16 bound is used (else the full float32 logits).
    """

    def __init__(self, handle: ModelHandle, prefilter: bool | None = None) -> None:
        self.handle = handle
        anatomy = handle.anatomy
        if anatomy.unembedding is None:
            raise UserError(f"model '{handle.name}' has no unembedding (language-model head); greedy decoding needs one")
        self.norm = anatomy.final_norm
        self.head = anatomy.unembedding
        self.weight = self.head.weight
        self.softcap = getattr(handle.model.config, "final_logit_softcapping", None)
        plain = getattr(self.head, "bias", None) is None and not self.softcap and self.weight.dtype == torch.float32 and self.weight.shape[1] <= 2**14
        pays = self.weight.shape[0] >= _BOUNDED_FROM_VOCABULARY and fast_bfloat16(self.weight.device)
        self.prefiltered = plain and (pays if prefilter is None else prefilter)
        if self.prefiltered:
            self.weight_bf16 = self.weight.detach().to(torch.bfloat16)
            self.largest_row = float(self.weight.detach().norm(dim=1).max())

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` float32 logits of ``[B, D]`` raw last-layer states, as the model's own head computes them."""
        logits = lens_logits(self.handle, states)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def tokens(self, states: torch.Tensor) -> torch.Tensor:
        """``[B]`` greedy tokens of ``[B, D]`` raw last-layer states (the lowest id among tied maxima, as ``argmax``)."""
        if not self.prefiltered:
            return self.logits(states).argmax(-1)
        with torch.no_grad():
            h = states.to(self.weight.device, self.weight.dtype)
            x = self.norm(h) if self.norm is not None else h
            approx = F.linear(x.to(torch.bfloat16), self.weight_bf16).float()  # [B, V]
            radius = _BOUND * x.norm(dim=-1) * self.largest_row  # [B]
            best = approx.max(dim=-1).values
            contenders = torch.nonzero((approx >= (best - 2 * radius)[:, None]).any(dim=0)).flatten()  # ascending ids
            exact = F.linear(x, self.weight[contenders])  # [B, C] float32, every contender of every row
            return contenders[exact.argmax(dim=-1)]
