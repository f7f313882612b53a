"""A run folder's layout, read by the runner that writes it and by the report that reads it back.

    OUT/recipe.yaml  run.json  01-analyze/ 02-knowledge/ 03-prune/ 04-recover/ 05-evaluate/

A stage's folder counts as finished only once its DONE marker exists (written last).
"""

from __future__ import annotations

from pathlib import Path

DONE = "DONE"
RECIPE_FILE = "recipe.yaml"
RUN_FILE = "run.json"
# Numbered by position, whether enabled or not, so a folder's name never depends on the recipe.
STAGE_NAMES = ("analyze", "knowledge", "prune", "recover", "evaluate")


def stage_folder(out: Path, name: str) -> Path:
    """OUT/NN-name, NN the stage's position in `STAGE_NAMES`."""
    return out / f"{STAGE_NAMES.index(name) + 1:02d}-{name}"


def finished_folder(out: Path, name: str) -> Path | None:
    """The stage's folder if it finished (its DONE marker exists), else None."""
    folder = stage_folder(out, name)
    return folder if (folder / DONE).is_file() else None
