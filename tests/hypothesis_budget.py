"""How many examples the property tests draw: each test names its count for the default, fast
profile; NCZIP_HYPOTHESIS=thorough multiplies it by THOROUGH_FACTOR (conftest.py loads the
profile of the same name, as python-zstandard's suite does with its own variable)."""
from __future__ import annotations

import os

PROFILE = os.environ.get("NCZIP_HYPOTHESIS", "default")
THOROUGH_FACTOR = 20
if PROFILE not in ("default", "thorough"):
    raise RuntimeError(f"NCZIP_HYPOTHESIS must be default or thorough, got {PROFILE!r}")


def examples(count: int) -> int:
    return count * THOROUGH_FACTOR if PROFILE == "thorough" else count
