"""Choosing the recipe from the part's id: a line that builds several board types reads each board's serial
(the PLC's PartId, else the QR code read from the frame) and judges it with the recipe whose
``part_id_pattern`` matches it (``recipe_by_part_id: true``; deploy/plc/README.md).

The decision, for each part before it is judged:

- exactly one recipe's pattern matches the whole id: that recipe (a switch when another one is active);
- no id (no PartId, no readable code) or no recipe matches: the active recipe stays, alarm
  ``recipe_no_match``;
- several recipes match: the active recipe stays, alarm ``recipe_ambiguous`` naming them (patterns that
  overlap are a configuration error the engineer must resolve).

Only the patterns are read here (the YAML file, validated with the recipe schema), re-read when a file
changes; a file that cannot be read is left out of the choice with a warning naming it and the field. The
switch itself validates the whole recipe (``RecipeManager.switch_now``).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml
from pydantic import ValidationError

from inspector.service.recipes import RecipeError, RecipeFile, list_recipes

log = logging.getLogger(__name__)
NO_MATCH = "recipe_no_match"
AMBIGUOUS = "recipe_ambiguous"


@dataclass(frozen=True)
class Choice:
    """``recipe`` when exactly one matches; else ``problem`` (the alarm's kind) and ``reason`` in words."""

    recipe: Optional[str] = None
    problem: Optional[str] = None
    reason: str = ""


@dataclass(frozen=True)
class _Entry:
    version: tuple[int, int]  # (mtime_ns, size) of the file this was read from
    name: Optional[str]
    pattern: Optional[re.Pattern]


class PartIdPatterns:
    """The ``part_id_pattern`` of every recipe file in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._entries: dict[Path, _Entry] = {}

    def patterns(self) -> dict[str, re.Pattern]:
        """name -> compiled pattern, for the recipes that have one (files read again only when changed)."""
        try:
            files = list_recipes(self.directory)
        except RecipeError as error:
            log.warning("choosing recipes by part id: %s", error)
            return {}
        entries = {}
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while listing
            version = (stat.st_mtime_ns, stat.st_size)
            entry = self._entries.get(path)
            if entry is None or entry.version != version:
                entry = _read(path, version)
            entries[path] = entry
        self._entries = entries
        return {entry.name: entry.pattern for entry in entries.values() if entry.pattern is not None}

    def choose(self, part_id: Optional[str]) -> Choice:
        if not part_id:
            return Choice(problem=NO_MATCH, reason="the part has no id (no PartId from the PLC, no code read "
                                                   "from the board)")
        matching = sorted(name for name, pattern in self.patterns().items() if pattern.fullmatch(part_id))
        if len(matching) == 1:
            return Choice(recipe=matching[0])
        if not matching:
            return Choice(problem=NO_MATCH, reason=f"part {part_id!r} matches no recipe's part_id_pattern in "
                                                   f"{self.directory}")
        return Choice(problem=AMBIGUOUS, reason=f"part {part_id!r} matches the part_id_pattern of "
                                                f"{', '.join(matching)}; make the patterns exclusive")


def _read(path: Path, version: tuple[int, int]) -> _Entry:
    """A recipe file's name and pattern; a file that does not validate is left out, with a warning."""
    try:
        data = yaml.safe_load(path.read_text())
        spec = RecipeFile(**data) if isinstance(data, dict) else None
    except (OSError, yaml.YAMLError) as error:
        log.warning("%s: left out of the choice by part id: %s", path, error)
        return _Entry(version, None, None)
    except ValidationError as error:
        fields = ", ".join(".".join(str(part) for part in problem["loc"]) or "(file)" for problem in error.errors())
        log.warning("%s: left out of the choice by part id: field(s) %s do not validate "
                    "(inspector recipe validate %s)", path, fields, path.stem)
        return _Entry(version, None, None)
    if spec is None:
        log.warning("%s: left out of the choice by part id: expected a mapping of field: value", path)
        return _Entry(version, None, None)
    pattern = re.compile(spec.part_id_pattern) if spec.part_id_pattern else None
    return _Entry(version, path.stem, pattern)  # a recipe is selected by its file name
