"""Class tables: the named, coloured brain areas that labels refer to.

A :class:`ClassTable` maps integer label ids to names and colours.  Label id 0
always means "unlabelled" and is not a class.  The default table holds the six
areas of the micro-CT paper in alphabetical order (the authors' class order);
:func:`prasad2020_table` holds the ids of the public thalamocortical annotation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AreaClass", "ClassTable", "default_table", "prasad2020_table"]

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class AreaClass:
    """One class: label id (>= 1), short name, long name and ``#rrggbb`` colour."""

    id: int
    name: str
    colour: str
    long_name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, int) or isinstance(self.id, bool) or not 1 <= self.id <= 65535:
            raise ValueError(f"class id must be an integer in 1..65535, got {self.id!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"class name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.colour, str) or not _HEX.match(self.colour):
            raise ValueError(f"class colour must look like '#rrggbb', got {self.colour!r}")

    @property
    def rgba(self) -> tuple[float, float, float, float]:
        """The colour as an RGBA tuple of floats in [0, 1]."""
        c = self.colour.lstrip("#")
        return (int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255, 1.0)


@dataclass(frozen=True)
class ClassTable:
    """An ordered, validated set of :class:`AreaClass` (ids and names unique)."""

    classes: tuple[AreaClass, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        names = [c.name for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"class ids must be unique, got {ids!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names!r}")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[AreaClass]:
        return iter(self.classes)

    @property
    def ids(self) -> list[int]:
        """Label ids in table order."""
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in table order."""
        return [c.name for c in self.classes]

    def by_id(self, class_id: int) -> AreaClass:
        """Return the class with label id ``class_id``."""
        for c in self.classes:
            if c.id == class_id:
                return c
        raise KeyError(f"no class with id {class_id!r}; ids are {self.ids!r}")

    def by_name(self, name: str) -> AreaClass:
        """Return the class called ``name``."""
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"no class named {name!r}; names are {self.names!r}")

    def color_dict(self) -> dict[int | None, tuple[float, float, float, float]]:
        """A ``{label id: rgba}`` mapping for napari Labels layers (0 transparent)."""
        colours: dict[int | None, tuple[float, float, float, float]] = {
            0: (0.0, 0.0, 0.0, 0.0),
            None: (0.5, 0.5, 0.5, 1.0),
        }
        colours.update({c.id: c.rgba for c in self.classes})
        return colours

    # -- editing returns new tables: a table is a value ------------------
    def add(self, name: str, colour: str | None = None, long_name: str = "") -> ClassTable:
        """Return a new table with one more class (next free id, a distinct colour)."""
        new_id = max(self.ids, default=0) + 1
        colour = colour or _PALETTE[(new_id - 1) % len(_PALETTE)]
        return ClassTable((*self.classes, AreaClass(new_id, name, colour, long_name)))

    def rename(self, class_id: int, name: str, long_name: str = "") -> ClassTable:
        """Return a new table where class ``class_id`` is called ``name``.

        The long name is replaced too (default: none): it described the old name
        ("Ctx — somatosensory cortex" renamed "granular" must not keep it).
        """
        old = self.by_id(class_id)
        return self._replace(AreaClass(old.id, name, old.colour, long_name))

    def recolour(self, class_id: int, colour: str) -> ClassTable:
        """Return a new table where class ``class_id`` has colour ``colour``."""
        old = self.by_id(class_id)
        return self._replace(AreaClass(old.id, old.name, colour, old.long_name))

    def remove(self, class_id: int) -> ClassTable:
        """Return a new table without class ``class_id``."""
        self.by_id(class_id)
        return ClassTable(tuple(c for c in self.classes if c.id != class_id))

    def _replace(self, new: AreaClass) -> ClassTable:
        return ClassTable(tuple(new if c.id == new.id else c for c in self.classes))

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "classes": [
                {"id": c.id, "name": c.name, "colour": c.colour, "long_name": c.long_name}
                for c in self.classes
            ]
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassTable:
        """Rebuild a table from :meth:`to_dict` output, validating every entry."""
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise ValueError(f"a class table needs a 'classes' list, got {data!r:.200}")
        items = []
        for entry in data["classes"]:
            if not isinstance(entry, dict):
                raise ValueError(f"each class must be a mapping, got {entry!r}")
            try:
                items.append(
                    AreaClass(
                        int(entry["id"]),
                        str(entry["name"]),
                        str(entry["colour"]),
                        str(entry.get("long_name", "")),
                    )
                )
            except KeyError as err:
                raise ValueError(f"class entry {entry!r} lacks the key {err}") from None
        return cls(tuple(items))

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClassTable:
        """Parse a JSON string written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"class table is not valid JSON: {err}") from None
        return cls.from_dict(data)

    @classmethod
    def generic(cls, ids: Sequence[int]) -> ClassTable:
        """A table of the given ids named ``class<id>``, with palette colours by id."""
        return cls(
            tuple(
                AreaClass(int(i), f"class{i}", _PALETTE[(int(i) - 1) % len(_PALETTE)]) for i in ids
            )
        )

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ClassTable:
        """A table with ids 1..n and palette colours for the given names."""
        return cls(
            tuple(AreaClass(i + 1, n, _PALETTE[i % len(_PALETTE)]) for i, n in enumerate(names))
        )


_PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
    "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324",
)  # fmt: skip

# The paper's six areas, alphabetical by short name as in the authors' code.
_PAPER_AREAS = (
    ("Ctx", "somatosensory cortex", "#e6194b"),
    ("HypoTh", "hypothalamus", "#f58231"),
    ("Str", "striatum", "#3cb44b"),
    ("VP", "ventral posterior thalamus", "#4363d8"),
    ("WM", "white matter / internal capsule", "#ffe119"),  # visible on bright tissue
    ("ZI", "zona incerta", "#911eb4"),
)


def on_white(colour: str) -> tuple[float, float, float, float]:
    """A class colour as drawn on a white plot: one too light to see there is darkened.

    Tables of earlier versions gave white matter ``#f0f0f0``, which shows on tissue
    but not on a figure's white; its hue is kept, its luminance brought to 0.7.
    """
    from matplotlib.colors import to_rgba

    r, g, b, a = to_rgba(colour)
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    k = 0.7 / lum if lum > 0.7 else 1.0
    return (r * k, g * k, b * k, a)


def default_table() -> ClassTable:
    """The paper's six areas: Ctx, HypoTh, Str, VP, WM, ZI with ids 1..6."""
    return ClassTable(
        tuple(AreaClass(i + 1, n, col, long) for i, (n, long, col) in enumerate(_PAPER_AREAS))
    )


def prasad2020_table() -> ClassTable:
    """Annotation ids of the public thalamocortical micro-CT (Prasad et al. 2020).

    Id 0 (clear) is unlabelled; 1 cortex, 2 striatum, 3 TRN, 4 VP, 5 zona incerta,
    6 internal capsule, 7 hypothalamus, 8 corpus callosum.
    """
    rows = (
        (1, "Ctx", "cortex", "#e6194b"),
        (2, "Str", "striatum", "#3cb44b"),
        (3, "TRN", "thalamic reticular nucleus", "#42d4f4"),
        (4, "VP", "ventral posterior thalamus", "#4363d8"),
        (5, "ZI", "zona incerta", "#911eb4"),
        (6, "IC", "internal capsule", "#ffe119"),
        (7, "HypoTh", "hypothalamus", "#f58231"),
        (8, "CC", "corpus callosum", "#bfef45"),
    )
    return ClassTable(tuple(AreaClass(i, n, col, long) for i, n, long, col in rows))
