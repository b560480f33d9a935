"""Stage progress of the audit: one line per stage naming it and what it works on
("audit 3/9: held-out photos (4 photos)") above one overall bar over the stages, all on stderr.

The audit's own bars (the inverters', the projector's) appear below the overall bar while a stage runs. Every line
is written with ``tqdm.write``, and while the stages run, log records and Python warnings are too, so no message
lands on (or is overdrawn by) a bar's line. With ``enabled=False`` (``audit(progress=False)``, ``--quiet``)
nothing is written. A leaf module.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any, Iterator, Optional, TextIO

__all__ = ["StageProgress", "plural"]


def plural(n: int, word: str, words: Optional[str] = None) -> str:
    """``n`` and ``word`` in the number it needs: plural(1, "photo") -> "1 photo", plural(4, "photo") -> "4 photos"."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


class StageProgress:
    """``total`` named stages of a run, announced one by one, with an overall bar (a context manager).

    with StageProgress(9, enabled=progress) as stages:
        with stages.stage("held-out photos", plural(4, "photo")):   # "audit 3/9: held-out photos (4 photos)"
            ...
    """

    def __init__(self, total: int, enabled: bool = True, label: str = "audit", stream: Optional[TextIO] = None):
        self.total, self.enabled, self.label = int(total), bool(enabled), label
        self._stream = stream
        self.done = 0
        self._bar: Any = None
        self._scope = contextlib.ExitStack()

    @property
    def stream(self) -> TextIO:
        """Where the lines and the bar go: the given stream, else stderr as it is now."""
        return self._stream if self._stream is not None else sys.stderr

    def __enter__(self) -> "StageProgress":
        if not self.enabled:
            return self
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._scope.enter_context(logging_redirect_tqdm())  # console log handlers write through tqdm.write
        self._scope.enter_context(warnings.catch_warnings())  # restores warnings.showwarning on exit
        warnings.showwarning = self._show_warning
        self._bar = tqdm(total=self.total, desc=self.label, unit="stage", file=self.stream, leave=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the overall bar and put the log and warning output back as it was."""
        try:
            if self._bar is not None:
                bar, self._bar = self._bar, None
                bar.close()
        finally:
            self._scope.close()

    def write(self, line: str) -> None:
        """Write ``line`` above the bars (nothing when disabled)."""
        if not self.enabled:
            return
        from tqdm import tqdm

        tqdm.write(line, file=self.stream)

    @contextlib.contextmanager
    def stage(self, title: str, detail: str = "") -> Iterator[None]:
        """Announce the next stage ("audit 3/9: title (detail)"), run the ``with`` block, then advance the bar."""
        number = self.done + 1
        self.write(f"{self.label} {number}/{self.total}: {title}" + (f" ({detail})" if detail else ""))
        if self._bar is not None:
            self._bar.set_postfix_str(title, refresh=True)
        try:
            yield
        finally:
            self.done = number
            if self._bar is not None:
                self._bar.update(1)

    def _show_warning(self, message: Any, category: type, filename: str, lineno: int, file: Any = None,
                      line: Optional[str] = None) -> None:
        self.write(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"))
