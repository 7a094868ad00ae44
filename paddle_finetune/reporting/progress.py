"""Progress bars. A bar is a tqdm bar (stderr, ETA) when stderr is a terminal, and plain
"[time] desc: n/total (p%) rate, ETA" lines every 10% or 30 s when it is not (a pipe, a notebook's
`!python train.py`, a log file), so piped output holds no carriage-return redraws or cursor codes. Every
bar ends with one summary line. Progress lines go to stderr, where tqdm puts its bars, so a prediction
CLI's stdout holds only its data.

Imports: the standard library; tqdm inside ProgressBar; of the project `reporting.console` and
`runtime.distributed`.
"""
import math
import os
import sys
import time

from paddle_finetune.reporting.console import _progress
from paddle_finetune.runtime.distributed import is_main_process

PROGRESS_ENV = "PADDLE_FINETUNE_PROGRESS"  # force "bar", "plain" or "off" instead of choosing by terminal

# ----------------------------------------------------------------------------
# progress bars
# ----------------------------------------------------------------------------
def _bar_mode():
    if not is_main_process():
        return "off"
    forced = os.environ.get(PROGRESS_ENV, "").lower()
    if forced in ("bar", "plain", "off"):
        return forced
    stream = sys.stderr
    is_tty = getattr(stream, "isatty", None)
    return "bar" if is_tty is not None and is_tty() and os.environ.get("TERM") != "dumb" else "plain"


def _duration(seconds):
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _rate(done, seconds, unit):
    if done <= 0 or seconds <= 0:
        return f"? {unit}/s"
    per_second = done / seconds
    if per_second < 1:
        return f"{1 / per_second:.2f} s/{unit}"
    return f"{per_second:.{2 if per_second < 10 else 1 if per_second < 100 else 0}f} {unit}/s"


def _format_postfix(values):
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


class ProgressBar:
    """What progress_bar returns: update(n), set_postfix(...), close(), a context manager.

    mode "bar": a tqdm bar on stderr (ETA, redraws), cleared at close; "plain": a line at most every
    `every_fraction` of the total or `every_seconds`, never closer than `min_seconds`; "off": nothing.
    Either way close() logs one line: "desc: n/total unit in 12.3s (4.56 unit/s), postfix".
    """

    def __init__(self, total, desc, initial=0, unit="it", mode=None, clock=time.monotonic,
                 every_fraction=0.1, every_seconds=30.0, min_seconds=2.0):
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.mode = mode or _bar_mode()
        self.postfix = {}
        self._clock, self._every_fraction, self._every_seconds, self._min_seconds = clock, every_fraction, every_seconds, min_seconds
        self._start = self._last_line = clock()
        self._next_mark = self._mark_after(initial)
        self._closed = False
        self._tqdm = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                              dynamic_ncols=True, mininterval=0.5, leave=False)

    def _mark_after(self, n):
        if not self.total:
            return math.inf
        step = self.total * self._every_fraction
        return (math.floor(n / step + 1e-9) + 1) * step

    def update(self, n=1):
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.mode == "plain" and self.n < (self.total or math.inf):
            now = self._clock()
            due = self.n >= self._next_mark or now - self._last_line >= self._every_seconds
            if due and now - self._last_line >= self._min_seconds:
                self._last_line, self._next_mark = now, self._mark_after(self.n)
                _progress(self._progress_line(now))

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        self.postfix = {**(ordered_dict or {}), **kwargs}
        if self._tqdm is not None:
            self._tqdm.set_postfix(self.postfix, refresh=refresh)

    def _progress_line(self, now):
        elapsed, done = now - self._start, self.n - self.initial
        line = f"{self.desc}: {self.n}/{self.total if self.total else '?'}"
        if self.total:
            line += f" ({100 * self.n / self.total:.0f}%)"
        line += f" {_rate(done, elapsed, self.unit)}"
        if self.total and done > 0:
            line += f", ETA {_duration((self.total - self.n) * elapsed / done)}"
        return line + (f", {_format_postfix(self.postfix)}" if self.postfix else "")

    def summary_line(self):
        elapsed = self._clock() - self._start
        line = f"{self.desc}: {self.n}/{self.total if self.total else '?'} {self.unit} in {_duration(elapsed)} ({_rate(self.n - self.initial, elapsed, self.unit)})"
        return line + (f", {_format_postfix(self.postfix)}" if self.postfix else "")

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        if self.mode != "off" and (self.n or self.total):
            _progress(self.summary_line())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(total, desc, initial=0, unit="it"):
    """A bar for `total` units, starting at `initial` (a resumed run): see ProgressBar."""
    return ProgressBar(total, desc, initial=initial, unit=unit)
