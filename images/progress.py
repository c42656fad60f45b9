"""docker pull's per-layer progress: redrawn in place on a terminal, one line per layer otherwise.

    abcdef012345: Pulling fs layer
    abcdef012345: Downloading [=========>              ]  1.21MB/3.73MB
    abcdef012345: Download complete

A PullProgress is the `report` of registry.fetch (and of what unpacks the layers after it).
"""

import sys
import time

from pyctr.runtime import humanize

_BAR_WIDTH = 40
DONE = ("Pull complete", "Already exists")  # a layer's last word
_REDRAW_EVERY = 0.1  # seconds between redraws of a layer's download bar


class PullProgress:
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.order: list[str] = []  # layer ids, one line each, in the order first reported
        self.drawn_at: dict[str, float] = {}

    def __call__(self, layer: str, status: str, current: int | None = None, total: int | None = None) -> None:
        if not self.live:
            # A log gets one line per layer, when it is done (a blob already here counts as done).
            if status in DONE and layer not in self.order:
                self.order.append(layer)
                self.stream.write(f"{layer}: {status}\n")
                self.stream.flush()
            return
        now = time.monotonic()
        if status == "Downloading" and now - self.drawn_at.get(layer, 0) < _REDRAW_EVERY and current != total:
            return
        self.drawn_at[layer] = now
        self._draw(layer, f"{layer}: {status}{_bar(current, total)}")

    def _draw(self, layer: str, text: str) -> None:
        if layer not in self.order:
            self.order.append(layer)
            self.stream.write(text + "\n")
        else:
            up = len(self.order) - self.order.index(layer)
            # Up to the layer's line, clear it, write, and back down below the last line.
            self.stream.write(f"\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")
        self.stream.flush()


def _bar(current: int | None, total: int | None) -> str:
    if current is None or not total:
        return ""
    filled = min(_BAR_WIDTH, _BAR_WIDTH * current // total)
    arrow = ">" if filled < _BAR_WIDTH else ""
    bar = "=" * filled + arrow + " " * (_BAR_WIDTH - filled - len(arrow))
    return f" [{bar}]  {humanize.size(current)}/{humanize.size(total)}"
