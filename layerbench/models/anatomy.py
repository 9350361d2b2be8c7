"""Where a transformer keeps its blocks, MLPs, final norm, unembedding and token embedding.

The ``residual`` capture site only needs Hugging Face's ``hidden_states``; the
other sites (:mod:`layerbench.capture.sites`), interventions (patching) and
the logit lens need the modules themselves. Each family maps to dotted
attribute paths; several prefixes are tried because the same weights load as
a bare model (``BertModel``) or with a head (``BertForMaskedLM``). The MLP
path is relative to a block: the ``mlp-input`` site is that module's input.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from layerbench.errors import UserError

# The MLP of a Llama-style block reads ``post_attention_layernorm``'s output;
# Gemma 2/3 (sandwich norms) read ``pre_feedforward_layernorm``'s, and OLMo 2
# (post-norms) reads the raw residual: the MLP module's input is the one
# definition that holds for all of them.
_LLAMA_LIKE: dict[str, list[str] | None] = {
    "blocks": ["model.layers", "layers"],
    "mlp": ["mlp"],
    "final_norm": ["model.norm", "norm"],
    "unembedding": ["lm_head"],
    "embedding": ["model.embed_tokens", "embed_tokens"],
}
_LLAMA_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3", "olmo", "olmo2", "smollm3")

# model_type -> candidate paths. None for a part the family does not have.
_FAMILIES: dict[str, dict[str, list[str] | None]] = {
    **{t: _LLAMA_LIKE for t in _LLAMA_TYPES},
    "gpt2": {
        "blocks": ["transformer.h", "h"],
        "mlp": ["mlp"],
        "final_norm": ["transformer.ln_f", "ln_f"],
        "unembedding": ["lm_head"],
        "embedding": ["transformer.wte", "wte"],
    },
    "gpt_neox": {
        "blocks": ["gpt_neox.layers", "layers"],
        "mlp": ["mlp"],
        "final_norm": ["gpt_neox.final_layer_norm", "final_layer_norm"],
        "unembedding": ["embed_out", "lm_head"],  # renamed lm_head in transformers 5
        "embedding": ["gpt_neox.embed_in", "embed_in"],
    },
    # BERT-style encoders are post-LayerNorm: every block ends in its own norm,
    # so there is no separate final norm, and the bare encoder has no unembedding.
    # Their feed-forward part starts at ``intermediate``, which reads the
    # attention sublayer's normed output.
    **{
        t: {
            "blocks": ["bert.encoder.layer", "roberta.encoder.layer", "encoder.layer"],
            "mlp": ["intermediate"],
            "final_norm": None,
            "unembedding": ["cls.predictions.decoder", "lm_head.decoder"],
            "embedding": ["bert.embeddings", "roberta.embeddings", "embeddings"],
        }
        for t in ("bert", "roberta", "xlm-roberta", "mpnet")
    },
}
# Post-LayerNorm encoders: each block's output is already normed, so the
# ``normed`` site (the final norm on every layer) is the residual stream itself.
_POST_LN = {"bert", "roberta", "xlm-roberta", "mpnet"}

# Families whose hidden_states[-1] is the final norm's output, not the raw
# residual stream (checked for Llama on transformers 5.23: lm_head(hs[-1])
# equals the logits exactly).
_NORM_ON_LAST = {t for t, parts in _FAMILIES.items() if parts["final_norm"]}


@dataclass(frozen=True)
class Anatomy:
    """The modules of one loaded model that interventions and lenses need.

    ``blocks[l-1]`` produces layer ``l`` of the capture (layer 0 is the
    embedding output), and ``mlps[l-1]`` is block ``l``'s MLP (None where the
    family is not mapped). ``final_norm`` and ``unembedding`` are None where the
    family or the loaded head has none. ``norm_on_last_layer`` says whether
    ``hidden_states[L]`` already carries the final norm (decoders) or is the
    raw output of the last block (post-LN encoders); ``post_layer_norm`` marks
    the post-LN encoders, whose every block output is already normed.
    """

    model_type: str
    blocks: nn.ModuleList
    final_norm: nn.Module | None
    unembedding: nn.Module | None
    embedding: nn.Module | None
    norm_on_last_layer: bool
    mlps: tuple[nn.Module, ...] | None = None
    post_layer_norm: bool = False

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def _lookup(model: nn.Module, path: str) -> nn.Module | None:
    node: object = model
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node if isinstance(node, nn.Module) else None


def _first(model: nn.Module, paths: list[str] | None) -> nn.Module | None:
    for path in paths or []:
        found = _lookup(model, path)
        if found is not None:
            return found
    return None


def get_anatomy(model: nn.Module) -> Anatomy:
    """Map ``model``'s blocks, final norm, unembedding and embedding.

    Raises:
        UserError: the architecture is not in the table and has no single
            ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks to fall back on.
    """
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    n_expected = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    parts = _FAMILIES.get(model_type)
    if parts is not None:
        blocks = _first(model, parts["blocks"])
        if isinstance(blocks, nn.ModuleList):
            mlps = tuple(_first(block, parts["mlp"]) for block in blocks)
            return Anatomy(
                model_type=model_type,
                blocks=blocks,
                final_norm=_first(model, parts["final_norm"]),
                unembedding=_first(model, parts["unembedding"]),
                embedding=_first(model, parts["embedding"]),
                norm_on_last_layer=model_type in _NORM_ON_LAST,
                mlps=mlps if all(m is not None for m in mlps) else None,
                post_layer_norm=model_type in _POST_LN,
            )
    # Unknown family: accept it only when exactly one ModuleList has the
    # configured number of blocks, so we never patch the wrong modules.
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n_expected]
    if n_expected and len(candidates) == 1:
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        return Anatomy(model_type, candidates[0], None, out, emb, norm_on_last_layer=False)
    known = ", ".join(sorted(_FAMILIES))
    raise UserError(
        f"cannot map the layers of model type '{model_type}' ({type(model).__name__}); "
        f"supported families: {known}"
    )
