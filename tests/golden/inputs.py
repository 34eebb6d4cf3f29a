"""The inputs of the golden archives in this directory, cut from the standard corpora (which are
never copied into the repository: the corpus files are read where they lie, corpora/locate.py).

    python tests/golden/inputs.py   # (re)writes every NAME.ncz and manifest.json here

Rewrite them only with a deliberate change of the format or of an arithmetic, which needs a new
backend id or preset: the suite decodes these archives on every machine and checks that
compressing the inputs again gives them byte for byte.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from corpora import locate  # noqa: E402


def _read(name: str) -> bytes:
    path = locate.find(name)
    if path is None:
        raise FileNotFoundError(f"corpus file {name} not found (looked in {', '.join(map(str, locate.expected_paths(name)))})")
    return path.read_bytes()


def alice29_20k() -> bytes:
    """The first 20,000 bytes of alice29.txt."""
    return _read("alice29.txt")[:20_000]


def enwik8_20k() -> bytes:
    """The first 20,000 bytes of enwik8.head."""
    return _read("enwik8.head")[:20_000]


def mixed() -> bytes:
    """Text, a JPEG's first 4 KB, text again: an LLM segment, a binary one, an LLM one (text runs
    under 4 KB would go with the binary around them, route.py)."""
    return _read("asyoulik.txt")[:5_000] + _read("fireworks.jpeg")[:4_096] + _read("lcet10.txt")[:5_000]


INPUTS = {"alice29_20k": alice29_20k, "enwik8_20k": enwik8_20k, "mixed": mixed}
MANIFEST = HERE / "manifest.json"


def write_all() -> None:
    from nczip import container
    from nczip.api import Compressor

    manifest = {}
    with Compressor() as compressor:
        for name, make in INPUTS.items():
            data = make()
            archive = compressor.compress(data)
            assert compressor.decompress(archive) == data
            (HERE / f"{name}.ncz").write_bytes(archive)
            header, _ = container.read_header(archive)
            manifest[name] = {
                "input": " ".join(make.__doc__.split()) if make.__doc__ else name,
                "input_bytes": len(data),
                "input_sha256": hashlib.sha256(data).hexdigest(),
                "archive_bytes": len(archive),
                "archive_sha256": hashlib.sha256(archive).hexdigest(),
                "backend": header.backend,
                "methods": [s.method.name for s in container.read_archive(archive).segments],
            }
            print(f"{name}: {len(data)} -> {len(archive)} bytes")
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    write_all()
