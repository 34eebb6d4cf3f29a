"""A transformers model directory's tokenizer, as the codec needs it: ids, exact byte pieces and
the 256 byte tokens.

transformers decodes ids to text, not to bytes, and a token can hold part of a UTF-8 character,
so pieces come from the token strings themselves: byte-level BPE (GPT-2, Llama-3, Qwen, SmolLM)
spells every byte as one printable character (`bytes_to_unicode`); SentencePiece vocabularies
(Gemma, Llama-2) write spaces as "▁" and bytes as "<0xAB>". tokens.py checks every tokenization
against these pieces, so a wrong guess costs bits, never data.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import NczipError


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's reversible map of the 256 bytes to printable characters, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class HfVocab:
    def __init__(self, tokenizer, name: str):
        self._tokenizer = tokenizer
        self.name = name
        table = tokenizer.get_vocab()  # token string -> id, added tokens included
        self.n_vocab = max(table.values()) + 1
        special = set(tokenizer.all_special_ids)
        byte_level = _decoder_type(tokenizer) == "ByteLevel"
        to_byte = _bytes_to_unicode() if byte_level else {}
        added = {token.content for token in tokenizer.added_tokens_decoder.values()}
        self._pieces = [b""] * self.n_vocab
        self._byte_tokens: dict[int, int] = {}
        for text, token in table.items():
            if token in special:
                continue  # control tokens stand for no bytes
            if text in added:
                piece = text.encode("utf-8")
            elif byte_level and all(c in to_byte for c in text):
                piece = bytes(to_byte[c] for c in text)
            elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                try:
                    piece = bytes([int(text[3:5], 16)])
                except ValueError:
                    piece = text.encode("utf-8")
            else:
                piece = text.replace("\u2581", " ").encode("utf-8")
            self._pieces[token] = piece
            if len(piece) == 1:
                self._byte_tokens.setdefault(piece[0], token)
        missing = [v for v in range(256) if v not in self._byte_tokens]
        if missing:
            raise NczipError(
                f"model {name} has no token for byte 0x{missing[0]:02X} ({len(missing)} byte values missing); "
                "nczip needs all 256 to code arbitrary bytes"
            )
        bos = tokenizer.bos_token_id
        # Models without a BOS (GPT-2, Qwen) start documents after their end-of-text token.
        self.bos = bos if bos is not None else tokenizer.eos_token_id

    @classmethod
    def from_directory(cls, path: Path, name: str) -> "HfVocab":
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NczipError(f"transformers cannot load the tokenizer of {name}: {str(exc).splitlines()[0]}") from None
        return cls(tokenizer, name)

    def tokenize(self, text: bytes) -> list[int]:
        return list(self._tokenizer(text.decode("utf-8"), add_special_tokens=False)["input_ids"])

    def piece(self, token: int) -> bytes:
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token id out of range 0..{self.n_vocab - 1}: {token}")
        return self._pieces[token]

    def byte_token(self, value: int) -> int:
        return self._byte_tokens[value]


def _decoder_type(tokenizer) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    if decoder.get("type") == "Sequence":
        types = [d.get("type") for d in decoder.get("decoders", [])]
        return "ByteLevel" if "ByteLevel" in types else None
    return decoder.get("type")
