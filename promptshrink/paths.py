"""Where bundled artefacts (tiktoken files, model manifests, calibration results) live."""

from __future__ import annotations

import os
from pathlib import Path


def models_dir() -> Path:
    """The `models/` folder: $PROMPTSHRINK_MODELS_DIR, the repository checkout, or the copy inside the wheel."""
    override = os.environ.get("PROMPTSHRINK_MODELS_DIR")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "models", here / "_bundled_models"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return here.parent / "models"
