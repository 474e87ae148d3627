"""Label tables: the name and colour of each label value, for viewers and QC.

A :class:`LabelTable` comes from a dict (``{value: name}`` or ``{value: (name, (r, g, b))}``), a
FreeSurfer lookup table (``FreeSurferColorLUT.txt``, ``*ColorLUT.txt``: ``value name r g b a`` per
line) or an ITK-SNAP label description file (``value r g b a visible mesh "name"`` per line); see
:func:`load_label_table`.  Values without a colour in the table get :func:`distinct_colours`, which
never gives two labels present in a volume the same colour, however many there are (a cycling palette
makes FreeSurfer's left cortex 3 and right ventricle 43 look alike).

Pure Python and numpy: no viewer, no frontend.
"""

from __future__ import annotations

import colorsys
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

__all__ = ["LabelTable", "load_label_table", "distinct_colours", "default_colour", "LabelTableSource"]

RGB = tuple[int, int, int]

# matplotlib's tab10 then tab20's light shades: the first 20 labels look as they always did
_FIRST = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)
_GOLDEN = 0.618033988749895


def default_colour(value: int, attempt: int = 0) -> RGB:
    """The colour of label ``value`` without a table (``attempt`` > 0: the next candidates, for clashes).

    Labels 1-20 get matplotlib's tab20 order; others a hue stepped by the golden ratio with three
    levels of saturation and brightness, so neighbouring and distant values differ.
    """
    v = int(value)
    if attempt == 0 and 1 <= v <= len(_FIRST):
        return _FIRST[v - 1]
    k = v + 7919 * attempt
    hue = (k * _GOLDEN) % 1.0
    sat = (0.95, 0.6, 0.8)[(k // 3) % 3]
    val = (0.95, 0.75, 0.55)[(k // 7) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def distinct_colours(values: Iterable[int], given: Optional[Mapping[int, RGB]] = None) -> dict[int, RGB]:
    """A colour for each of ``values``: ``given`` ones kept, the others from :func:`default_colour`,
    moved on to the next candidate while the colour is taken by another of ``values``.

    The result depends only on the set of values (and ``given``), not on their order.
    """
    given = dict(given or {})
    vals = sorted({int(v) for v in values})
    out: dict[int, RGB] = {v: tuple(given[v]) for v in vals if v in given}  # type: ignore[misc]
    used = set(out.values())
    for v in vals:
        if v in out:
            continue
        attempt = 0
        colour = default_colour(v)
        while colour in used or colour == (0, 0, 0):
            attempt += 1
            colour = default_colour(v, attempt)
        out[v] = colour
        used.add(colour)
    return out


@dataclass
class LabelTable:
    """Names and colours of label values (``0`` is the background: it is never drawn).

    Attributes:
        names: ``{value: name}``.
        colours: ``{value: (r, g, b)}`` for the values the table colours; the others get
            :func:`distinct_colours` in :meth:`colours_for`.
        source: where the table came from (for messages).
    """

    names: dict[int, str] = field(default_factory=dict)
    colours: dict[int, RGB] = field(default_factory=dict)
    source: str = "dict"

    def name(self, value: int) -> str:
        """The name of ``value`` (``"background"`` for 0 without a name, else ``"label <value>"``)."""
        v = int(value)
        if v in self.names:
            return self.names[v]
        return "background" if v == 0 else f"label {v}"

    def colours_for(self, values: Iterable[int]) -> dict[int, RGB]:
        """A colour for each of ``values`` (the table's, then distinct defaults; 0 excluded)."""
        return distinct_colours((v for v in values if int(v) != 0), self.colours)

    def merged(self, names: Mapping[int, str]) -> "LabelTable":
        """A copy with ``names`` added (they win over the table's)."""
        return LabelTable({**self.names, **{int(k): str(v) for k, v in names.items()}}, dict(self.colours),
                          self.source)

    def __len__(self) -> int:
        return len(set(self.names) | set(self.colours))


LabelTableSource = Union[LabelTable, Mapping[int, Any], str, "os.PathLike[str]", None]


def _rgb(value: Any, where: str) -> RGB:
    try:
        r, g, b = (int(c) for c in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: a colour should be three integers (r, g, b), got {value!r}") from e
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise ValueError(f"{where}: colour components should be in 0..255, got {(r, g, b)}")
    return (r, g, b)


def _from_dict(table: Mapping[Any, Any]) -> LabelTable:
    names: dict[int, str] = {}
    colours: dict[int, RGB] = {}
    for key, value in table.items():
        try:
            v = int(key)
        except (TypeError, ValueError) as e:
            raise ValueError(f"label table keys should be label values (integers), got {key!r}") from e
        if isinstance(value, str):
            names[v] = value
        elif isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str):
            names[v] = value[0]
            colours[v] = _rgb(value[1], f"label {v}")
        else:
            raise ValueError(f"label {v}: the table's value should be a name or (name, (r, g, b)), got {value!r}")
    return LabelTable(names, colours, "dict")


_ITK_LINE = re.compile(r'^\s*(-?\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+"(.*)"\s*$')


def _parse_text(text: str, source: str) -> LabelTable:
    names: dict[int, str] = {}
    colours: dict[int, RGB] = {}
    kind = None
    for n, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip() if not _ITK_LINE.match(line) else line.strip()
        if not body:
            continue
        m = _ITK_LINE.match(body)
        if m:  # ITK-SNAP: IDX R G B A VIS MSH "LABEL"
            kind = kind or "ITK-SNAP"
            v = int(m.group(1))
            names[v] = m.group(8)
            colours[v] = _rgb(m.group(2, 3, 4), f"{source}, line {n}")
            continue
        parts = shlex.split(body) if '"' in body else body.split()
        if len(parts) >= 5 and parts[0].lstrip("-").isdigit():  # FreeSurfer: value name r g b [a]
            kind = kind or "FreeSurfer"
            v = int(parts[0])
            try:
                colours[v] = _rgb(parts[2:5], f"{source}, line {n}")
            except ValueError:
                raise ValueError(f"{source}, line {n}: expected 'value name r g b a' (FreeSurfer) or "
                                 f"'value r g b a vis mesh \"name\"' (ITK-SNAP), got {line!r}") from None
            names[v] = parts[1]
            continue
        raise ValueError(f"{source}, line {n}: expected 'value name r g b a' (FreeSurfer) or "
                         f"'value r g b a vis mesh \"name\"' (ITK-SNAP), got {line!r}")
    if not names:
        raise ValueError(f"{source} holds no labels: is it a FreeSurfer *ColorLUT.txt or an ITK-SNAP label "
                         "description file?")
    return LabelTable(names, colours, f"{kind} {source}")


def load_label_table(source: LabelTableSource) -> LabelTable:
    """A :class:`LabelTable` from a table, a dict, or a file (FreeSurfer LUT or ITK-SNAP description).

    ``None`` gives an empty table (every label gets a distinct default colour).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a dict or file that is not a label table (the message names the line).
    """
    if source is None:
        return LabelTable(source="none")
    if isinstance(source, LabelTable):
        return source
    if isinstance(source, Mapping):
        return _from_dict(source)
    path = Path(os.fspath(source))
    if not path.is_file():
        raise FileNotFoundError(f"label table {str(path)!r} does not exist; pass a FreeSurfer *ColorLUT.txt, an "
                                "ITK-SNAP label description file or a dict {value: name}")
    return _parse_text(path.read_text(encoding="utf-8", errors="replace"), path.name)
