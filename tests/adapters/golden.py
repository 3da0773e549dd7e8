"""Golden files of the adapters' generated texts (tests/adapters/golden/), and their regeneration: with
XENDDD_REGOLD=1 the expected file is written from the generated text first, after a deliberate change."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden")


def golden_text(file_name: str, generated: str) -> str:
    """The golden file's text (written from `generated` first under XENDDD_REGOLD)."""
    path = GOLDEN / file_name
    if os.environ.get("XENDDD_REGOLD"):
        path.write_text(generated)
    return path.read_text()
