"""The split file (``split.json``) of large splits: written and read without a Python
object per index.

:func:`write_split` writes ``{"n": …, "seed": …, "train": [...], "valid": [...],
"test": [...]}`` with each index list on one line, formatted :data:`WRITE_ROWS` indices at
a time; :func:`read_large` parses files in exactly that layout with numpy (any other
valid JSON split file is read by :meth:`mfgnn.data.splits.Split.load` as general JSON).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..fileio import write_atomic

_NAMES = ("train", "valid", "test")


def write_split(split, path: str | Path) -> Path:
    """Write ``split`` (a :class:`~mfgnn.data.splits.Split`) to ``path`` atomically."""
    def write(fh) -> None:
        fh.write(f'{{\n  "n": {json.dumps(split.n)},\n  "seed": {json.dumps(split.seed)}'
                 .encode())
        for name in _NAMES:
            rows = getattr(split, name)
            fh.write(f',\n  "{name}": ['.encode())
            for s in range(0, len(rows), WRITE_ROWS):
                text = ", ".join(map(str, rows[s:s + WRITE_ROWS].tolist()))
                fh.write(((", " if s else "") + text).encode())
            fh.write(b"]")
        fh.write(b"\n}\n")

    return write_atomic(path, write)


#: Indices formatted at once by :func:`write_split`.
WRITE_ROWS = 65536
#: Split files larger than this (bytes) are parsed by :func:`_read_large`.
LARGE_SPLIT_BYTES = 1 << 20
_LIST = re.compile(r'"(train|valid|test)"\s*:\s*\[([0-9,\s]*)\]')
_SCALAR = re.compile(r'"(n|seed)"\s*:\s*(null|[0-9]+)')


def read_large(path: Path) -> dict | None:
    """The fields of a split file in the layout :func:`write_split` writes, index lists
    parsed by numpy (no Python int per index); None when the file does not have exactly
    that layout (the caller then reads it as general JSON)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lists = {m.group(1): m.span(2) for m in _LIST.finditer(text)}
    scalars = {m.group(1): m.group(2) for m in _SCALAR.finditer(text)}
    if sorted(lists) != sorted(_NAMES) or len(scalars) != 2:
        return None
    out: dict = {k: None if v == "null" else int(v) for k, v in scalars.items()}
    for name, (a, b) in lists.items():
        body = text[a:b]
        expected = body.count(",") + 1 if body.strip() else 0
        values = (np.array(body.replace(",", " ").split(), dtype=np.int64) if expected < 2
                  else np.fromstring(body, dtype=np.int64, sep=","))
        if len(values) != expected:
            return None
        out[name] = values
    return out
