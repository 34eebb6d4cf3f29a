"""The manifest of standard corpora (manifest.json beside this file): names, sizes, SHA-256, sources.

    >>> from corpora.manifest import bench_files
    >>> [f.name for f in bench_files()]
    ['alice29.txt', 'asyoulik.txt', 'lcet10.txt', 'plrabn12.txt', 'html', 'urls.10K', 'enwik8.head']

`bench_files()` is the text corpus `nczip bench` runs when it is given no files. `sha256` is None
where no local copy was at hand to check it; `default_limit` is how many leading bytes a benchmark
takes by default (None: the whole file).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST = Path(__file__).resolve().with_name("manifest.json")


@dataclass(frozen=True)
class CorpusSet:
    name: str
    title: str
    page: str
    download: str


@dataclass(frozen=True)
class CorpusFile:
    name: str
    set: str
    kind: str  # "text" or "binary"
    size: int
    sha256: str | None
    bench: bool
    default_limit: int | None
    source: str  # where to get it: the file's own address, else its set's download
    note: str = ""


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict[str, CorpusSet], tuple[CorpusFile, ...]]:
    data = json.loads(MANIFEST.read_text())
    sets = {name: CorpusSet(name, **fields) for name, fields in data["sets"].items()}
    files = tuple(
        CorpusFile(
            name=f["name"],
            set=f["set"],
            kind=f["kind"],
            size=f["size"],
            sha256=f["sha256"],
            bench=f["bench"],
            default_limit=f["default_limit"],
            source=f.get("source") or sets[f["set"]].download,
            note=f.get("note", ""),
        )
        for f in data["files"]
    )
    return sets, files


def sets() -> dict[str, CorpusSet]:
    return dict(_load()[0])


def files() -> list[CorpusFile]:
    return list(_load()[1])


def bench_files() -> list[CorpusFile]:
    """The text corpus `nczip bench` runs by default, in the manifest's order."""
    return [f for f in files() if f.bench]


def get(name: str) -> CorpusFile | None:
    return next((f for f in files() if f.name == name), None)
