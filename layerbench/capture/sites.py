"""Capture sites: what "layer l's vector" is, all read from the same forward pass.

- ``residual`` (the default): Hugging Face's ``hidden_states``. Layer 0 is
  the embedding output, layer l the output of block l. Decoders whose
  ``anatomy.norm_on_last_layer`` is true return layer L through the final norm
  (the model's own convention); layers 0..L-1 are the raw residual stream.
- ``normed``: the final norm applied to every layer's residual, layer 0
  included: what a model truncated to l blocks returns as its last hidden
  state. This is the view of Skean et al. (2025), whose harness sets
  ``num_hidden_layers = l`` and pools the last hidden state. Layer L equals
  ``residual``'s. Post-LayerNorm encoders (BERT) end every block in a norm,
  so there ``normed`` is ``residual``.
- ``mlp-input``: the input of block l's MLP (for Llama-style blocks the
  output of ``post_attention_layernorm``, the module Jin et al. (2024) trace;
  ``pre_feedforward_layernorm``'s for Gemma 2/3; ``ln_2``'s for GPT-2).
  L vectors: layer l in 1..L is block l's, there is no layer 0. Jin et al.
  number the same vectors 0..L-1.

Every site of a capture comes from one forward pass: ``residual`` and
``normed`` from ``hidden_states``, ``mlp-input`` from forward pre-hooks on
the MLP modules that :mod:`layerbench.models.anatomy` locates.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from layerbench.choices import SITES, unknown_choice
from layerbench.errors import UserError
from layerbench.models.loading import ModelHandle


def site_layers(n_layers: int, site: str) -> range:
    """The layer numbers a site's states hold, in order: ``0..L``, or ``1..L`` for ``mlp-input``."""
    return range(1, n_layers + 1) if site == "mlp-input" else range(n_layers + 1)


def check_sites(handle: ModelHandle, sites: Sequence[str]) -> None:
    """Refuse an unknown site, or one the model's anatomy cannot provide, with a one-line :class:`UserError`."""
    if not sites:
        raise UserError("no capture site asked for; use one or more of " + ", ".join(SITES))
    anatomy = handle.anatomy
    for site in sites:
        if site not in SITES:
            raise UserError(unknown_choice("capture site", site, SITES))
        if site == "mlp-input" and anatomy.mlps is None:
            raise UserError(f"site 'mlp-input' is not mapped for model type '{anatomy.model_type}' ({handle.name}); "
                            "use --site residual or normed")
        if site == "normed" and anatomy.final_norm is None and not anatomy.post_layer_norm:
            raise UserError(f"site 'normed' needs the final norm, which is not mapped for model type '{anatomy.model_type}' ({handle.name}); "
                            "use --site residual")


class SiteRecorder:
    """Forward pre-hooks that keep what the hook-based sites need from each forward call.

    Only ``mlp-input`` is hook-based: one ``[B, T, D]`` tensor per block per
    forward call, in block order. :meth:`take` returns and forgets them.
    """

    def __init__(self) -> None:
        self.mlp_inputs: list[torch.Tensor] = []

    def take(self) -> list[torch.Tensor]:
        taken, self.mlp_inputs = self.mlp_inputs, []
        return taken


@contextmanager
def recording(handle: ModelHandle, sites: Sequence[str]) -> Iterator[SiteRecorder]:
    """Hooks for the hook-based sites among ``sites`` (none for ``residual`` and ``normed``), removed on exit."""
    recorder = SiteRecorder()
    hooks = []
    if "mlp-input" in sites:
        mlps = handle.anatomy.mlps
        if mlps is None:  # check_sites refuses this before any capture
            raise UserError(f"site 'mlp-input' is not mapped for model type '{handle.anatomy.model_type}'")

        def keep_input(_module, args, kwargs):
            recorder.mlp_inputs.append(args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v)))

        hooks = [mlp.register_forward_pre_hook(keep_input, with_kwargs=True) for mlp in mlps]
    try:
        yield recorder
    finally:
        for hook in hooks:
            hook.remove()


def site_stacks(handle: ModelHandle, hidden: Sequence[torch.Tensor], mlp_inputs: Sequence[torch.Tensor], sites: Sequence[str],
                truncated: bool = False) -> dict[str, list[torch.Tensor]]:
    """Token states of one batch at each site, layer by layer.

    Args:
        hidden: the forward pass's ``hidden_states``, L+1 tensors ``[B, T, D]``
            (``truncated``: k+1, the layers 0..k of a pass stopped after block k < L, none through the final norm).
        mlp_inputs: L tensors ``[B, T, D]`` from :class:`SiteRecorder` (empty unless ``mlp-input`` is asked; k when truncated).
        sites: the sites wanted.

    Returns:
        site -> K tensors ``[B, T, D]`` in the model's dtype, ``K = len(site_layers(L, site))``
        (``torch.stack`` gives ``[K, B, T, D]``). Nothing is copied but the
        normed states: the sites are read one layer at a time, so no
        stacked copy of every layer is ever allocated.
    """
    out: dict[str, list[torch.Tensor]] = {}
    anatomy = handle.anatomy
    if "residual" in sites:
        out["residual"] = list(hidden)
    if "normed" in sites:
        norm = anatomy.final_norm
        if anatomy.post_layer_norm:
            out["normed"] = list(hidden)
        elif norm is None:  # check_sites refuses this before any capture
            raise UserError(f"site 'normed' needs the final norm, which is not mapped for model type '{anatomy.model_type}'")
        else:
            last = len(hidden) - 1  # hidden_states[L] already carries the final norm where norm_on_last_layer
            out["normed"] = [state if layer == last and anatomy.norm_on_last_layer and not truncated else norm(state) for layer, state in enumerate(hidden)]
    if "mlp-input" in sites:
        if len(mlp_inputs) != (len(hidden) - 1 if truncated else handle.n_layers):
            raise RuntimeError(f"recorded {len(mlp_inputs)} MLP inputs for {handle.n_layers} blocks")
        out["mlp-input"] = list(mlp_inputs)
    return out
