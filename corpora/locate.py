"""Find local copies of the standard corpora: $NCZIP_CORPORA first, then ../shared/corpora.

The files are never copied into the repository; tests and benchmarks read them where they are.
"../shared/corpora" is relative to the repository root (the directory above corpora/).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def corpus_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("NCZIP_CORPORA"):
        dirs.append(Path(os.environ["NCZIP_CORPORA"]))
    dirs.append(REPO_ROOT.parent / "shared" / "corpora")
    return dirs


def find(name: str) -> Path | None:
    """The path of corpus file `name`, or None when no corpus directory has it."""
    for candidate in expected_paths(name):
        if candidate.is_file():
            return candidate
    return None


def expected_paths(name: str) -> list[Path]:
    """Where find() looks for `name`, in order (for "missing: ..." messages)."""
    return [directory / name for directory in corpus_dirs()]
