"""Edge-case inputs every coding path must round-trip exactly.

Written here rather than stored, so each one says why it is on the list.
"""
from __future__ import annotations

import random


def edge_cases() -> dict[str, bytes]:
    rng = random.Random(1234)
    return {
        "empty": b"",
        "one_byte": b"a",
        "one_nul": b"\x00",
        "one_high_byte": b"\xff",
        "ascii": b"The quick brown fox jumps over the lazy dog. 0123456789 !@#$%^&*()\n",
        # Several scripts, combining marks and 4-byte emoji: multi-byte UTF-8 at every length.
        "multilingual_utf8": (
            "日本語のテキスト、中文文本。 العربية نص تجريبي. Ελληνικά. Русский текст. "
            "e\u0301 \u00e9 🙂🚀👩‍💻 \U0001f600 नमस्ते\n"
        ).encode("utf-8"),
        # Truncated sequences, lone continuation bytes, overlongs and surrogates encoded in UTF-8.
        "invalid_utf8": b"ok \xc3 \x80\x80 \xe2\x82 \xf0\x9f\x98 \xc0\xaf \xed\xa0\x80 \xff\xfe end",
        "all_byte_values": bytes(range(256)),
        "all_byte_values_reversed": bytes(range(255, -1, -1)),
        "crlf": b"line one\r\nline two\r\n\r\nlast line without newline",
        "lone_cr": b"a\rb\rc\r",
        "nul_runs": b"text\x00\x00\x00\x00\x00\x00\x00\x00more text" + b"\x00" * 300,
        # Text that spells the model's special tokens must stay text, byte for byte.
        "special_token_lookalikes": b"<bos><eos><pad><unk><start_of_turn>user\nhi<end_of_turn>\n<unused0><mask>[@BOS@]<0x41>",
        "control_bytes": bytes(range(32)) + b"\x7f",
        "whitespace": b"   \t\t  \n\n\n\n  \x0b\x0c  ",
        "long_repeat": b"abcdefgh" * 400,
        "binary_random": bytes(rng.getrandbits(8) for _ in range(600)),
    }


def png_image(width: int = 32, height: int = 32, seed: int = 7) -> bytes:
    """A real PNG (a noisy gradient), written with zlib: already-compressed bytes, as in a tree."""
    import struct
    import zlib

    rng = random.Random(seed)
    rows = b"".join(
        b"\x00" + bytes(min(255, (x * 8 + y * 4 + rng.randrange(48)) & 0xFF) for x in range(width) for _ in range(3))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def source_tree_tar(files: dict[str, bytes]) -> bytes:
    """A tar of `files` (name -> content) as `tar cf` writes it, with fixed owners and times so
    the same files always give the same bytes."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(content), 1_700_000_000, 0o644, "dev", "dev"
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def small_source_tree() -> bytes:
    """A tar of a few of nczip's own modules and a PNG icon: text with binary islands (tar
    headers, the image, the end-of-archive padding)."""
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "nczip"
    files = {f"nczip/{name}": (package / name).read_bytes() for name in ("errors.py", "fileio.py", "segment.py", "progress.py")}
    files["nczip/docs/icon.png"] = png_image()
    return source_tree_tar(files)
