"""THE table printer for the terminal: ``torchenv check``'s summary, ``compare``, ``submit``.

A table is columns (header, alignment, an optional width limit and how a longer cell is cut) and
rows of text cells. Every column but the last is padded to its widest cell (header included, after
cutting) or to a fixed width; the last is not padded; lines carry no trailing blanks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Cut = Callable[[str, int], str]


def ellipsis(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with "..."."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def clip(text: str, limit: int) -> str:
    return text[:limit]


def keep_ends(text: str, limit: int) -> str:
    """A path keeps both ends (its end tells environments apart); other text is cut at the end."""
    if len(text) <= limit:
        return text
    if "/" in text and " " not in text:
        head = (limit - 3) // 2
        return text[:head] + "..." + text[len(text) - (limit - 3 - head) :]
    return ellipsis(text, limit)


@dataclass(frozen=True)
class Column:
    header: str
    align: str = "<"  # "<" or ">"
    limit: int | None = None  # longer cells are cut to this many characters
    width: int | None = None  # a fixed width (else the widest cell)
    cut: Cut = field(default=ellipsis)


def render(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    marks: Sequence[str] | None = None,
    header_mark: str = " ",
    sep: str = "  ",
) -> list[str]:
    """The table's lines: the header line, then one per row. With ``marks``, each line starts with
    its row's mark and a space (the header with ``header_mark``)."""
    cut_rows = [
        [c.cut(cell, c.limit) if c.limit is not None else cell for c, cell in zip(columns, row, strict=True)]
        for row in rows
    ]
    widths = [
        c.width if c.width is not None else max([len(c.header), *(len(r[i]) for r in cut_rows)])
        for i, c in enumerate(columns)
    ]

    def line(cells: Sequence[str], mark: str | None) -> str:
        padded = [f"{cell:{c.align}{w}}" for cell, c, w in zip(cells[:-1], columns, widths, strict=False)]
        text = sep.join([*padded, cells[-1]])
        return (text if mark is None else f"{mark} {text}").rstrip()

    head = line([c.header for c in columns], header_mark if marks is not None else None)
    body = [line(r, marks[i] if marks is not None else None) for i, r in enumerate(cut_rows)]
    return [head, *body]
