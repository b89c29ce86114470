"""Progress that reads well in a terminal and in a log file.

In a terminal (stderr is a TTY) progress is a tqdm bar. In a log (CI, `make bench > log`, sweep
workers) a bar's carriage-return frames pile up on one line, so progress is printed as whole
lines instead: one at each 10 % and at least every `LOG_INTERVAL_S` seconds. `--no-progress`
silences both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LOG_INTERVAL_S = 30.0


def stderr_is_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def format_rate(per_s: float, unit: str) -> str:
    """`12.3 batch/s`, or `42 s/batch` below one a second (slow work read as a time, not
    as `0.02 batch/s`); `- s/batch` before the first item."""
    if per_s <= 0:
        return f"- s/{unit}"
    if per_s >= 1:
        return f"{per_s:.2f} {unit}/s"
    return f"{1 / per_s:.1f} s/{unit}" if per_s > 0.01 else f"{1 / per_s:.0f} s/{unit}"


class LineProgress:
    """A tqdm-like counter that prints whole lines: `desc: n/total unit (p%), t s, r unit/s`."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.interval_s = total, desc, unit, interval_s
        self.n = 0
        self.start = self.last = time.perf_counter()
        self.next_decile = 1
        self.closed = False
        self.postfix = ""

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        line = (
            f"{self.desc}: {done} {self.unit}{pct}, {elapsed:.0f} s, {format_rate(rate, self.unit)}"
        )
        return f"{line}, {self.postfix}" if self.postfix else line

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        decile = 10 * self.n // self.total if self.total else 0
        if decile >= self.next_decile or now - self.last >= self.interval_s:
            if self.total:
                self.next_decile = decile + 1
            self.last = now
            print(self._line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.closed and self.total and self.n < self.total:
            print(self._line() + " (stopped)", file=sys.stderr, flush=True)
        self.closed = True

    def set_postfix(self, **values: Any) -> None:
        """tqdm API: `key=value` pairs shown at the end of the next lines."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(LineProgress):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
):
    """A tqdm bar on a TTY, whole lines in a log, nothing when not `enabled`."""
    if not enabled:
        return _Silent(iterable, total=total, desc=desc, unit=unit)
    if stderr_is_tty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)


def lightning_progress(enabled: bool) -> tuple[bool, list]:
    """(enable_progress_bar, callbacks) for a Lightning Trainer: its own bar on a TTY, one line
    per epoch (and every LOG_INTERVAL_S seconds inside long epochs) in a log."""
    if not enabled:
        return False, []
    if stderr_is_tty():
        return True, []
    return False, [_epoch_lines()]


def _epoch_lines():
    import lightning as L

    class EpochLines(L.Callback):
        """Prints `epoch e/E: step s, <logged metrics>` lines instead of a progress bar."""

        def __init__(self) -> None:
            self.last = time.perf_counter()

        def _print(self, trainer, where: str) -> None:
            logged = trainer.callback_metrics.items()
            metrics = {k: float(v) for k, v in logged if getattr(v, "ndim", 1) == 0}
            shown = "  ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
            print(
                f"epoch {trainer.current_epoch + 1}/{total} {where}: step {trainer.global_step}"
                + (f"  {shown}" if shown else ""),
                file=sys.stderr,
                flush=True,
            )
            self.last = time.perf_counter()

        def on_train_batch_end(self, trainer, *args: Any) -> None:
            if time.perf_counter() - self.last >= LOG_INTERVAL_S:
                self._print(trainer, "running")

        def on_train_epoch_end(self, trainer, *args: Any) -> None:
            self._print(trainer, "done")

    return EpochLines()
