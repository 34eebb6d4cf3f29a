"""A one-line progress display on stderr: amount done, rate, ETA. Only used on a terminal."""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, total_bytes: int, label: str, stream: TextIO | None = None, min_interval: float = 0.25):
        self.total = total_bytes
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.tokens = 0
        self.segments = 0  # counted by advance_segment (a Ray run reports whole segments)
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._min_interval = min_interval

    def advance(self, nbytes: int, ntokens: int) -> None:
        self.done += nbytes
        self.tokens += ntokens
        now = time.monotonic()
        if now - self._last_draw >= self._min_interval:
            self._last_draw = now
            self._draw(now)

    def advance_segment(self, nbytes: int, ntokens: int) -> None:
        """A whole segment done (by any worker of a cluster)."""
        self.segments += 1
        self.advance(nbytes, ntokens)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        eta = max(self.total - self.done, 0) / rate if rate > 0 else float("inf")
        eta_text = "--:--" if eta == float("inf") else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        segments = f"{self.segments} segments  " if self.segments else ""
        figures = (
            f": {fraction:6.1%}  {self.done}/{self.total} bytes  {segments}"
            f"{self.tokens / elapsed:6.1f} tok/s  ETA {eta_text} "
        )
        # A line longer than the terminal wraps, and "\r" would then redraw only its last row:
        # shorten the label (keeping its end, the file name's most telling part), then the rest.
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):  # not a real terminal (or a test's stand-in)
            width = shutil.get_terminal_size(fallback=(80, 24)).columns
        room = max(width - 1, 1)
        label = self.label
        if len(label) + len(figures) > room:
            keep = max(room - len(figures) - 1, 8)
            label = "\u2026" + label[-keep:] if len(label) > keep else label
        self.stream.write("\r" + (label + figures)[:room])
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()
