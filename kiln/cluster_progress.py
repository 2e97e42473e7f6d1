"""Progress of a render farm batch: one stderr line per finished job, and on a terminal an overall
bar kept below them. Paths of the pictures written go to stdout, as a local batch prints them."""
from __future__ import annotations

import sys
from typing import TextIO

_BAR_WIDTH = 30


class Progress:
    def __init__(self, total: int, outputs: TextIO | None = None, stream: TextIO | None = None) -> None:
        """`outputs`: where the paths of the pictures written go (None: nowhere, as with --json)."""
        self.total = total
        self.done = 0
        self.outputs = outputs
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream)

    def line(self, text: str) -> None:
        """One line of news, above the bar."""
        self._clear_bar()
        print(f"kiln: {text}", file=self.stream, flush=True)
        self._draw_bar()

    def finished(self, text: str) -> None:
        """A job is over (done, failed or cancelled)."""
        self.done += 1
        self.line(f"{text} [{self.done}/{self.total}]")

    def output(self, path: str) -> None:
        if self.outputs is not None:
            print(path, file=self.outputs, flush=True)

    def close(self) -> None:
        self._clear_bar()

    def _draw_bar(self) -> None:
        if self.tty:
            filled = _BAR_WIDTH * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            self.stream.write(f"[{bar}] {self.done}/{self.total} jobs")
            self.stream.flush()

    def _clear_bar(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
