"""Progress of a long loop: MintPy's animated bar on a terminal, one line per 10 % in a log.

ptime.progressBar redraws its bar with a carriage return on every update; written to a file
(hotspotApp.py ... > log) each redraw stays, and a log held hundreds of `[>   ]` fragments.
"""
import sys
import time


class LineProgress:
    """ptime.progressBar's interface (update / close) writing a whole line each time another
    tenth of the work is done, like smallbaselineApp's logs."""

    def __init__(self, maxValue=100, prefix="", print_msg=True, step=10, stream=None):
        self.max = maxValue
        self.prefix = prefix
        self.print_msg = print_msg
        self.step = step
        self.stream = stream
        self.start = time.time()
        self.shown = 0                  # last percentage written

    def update(self, value, every=1, suffix=""):
        if not self.print_msg or self.max <= 0:
            return
        percent = int(100 * min(value, self.max) / self.max)
        if percent >= self.shown + self.step or (percent == 100 and self.shown < 100):
            self.shown = percent - percent % self.step if percent < 100 else 100
            stream = self.stream or sys.stdout
            text = f"{self.prefix}{percent:3d} %" + (f" {suffix}" if suffix else "")
            stream.write(f"{text} ({time.time() - self.start:.0f} s)\n")
            stream.flush()

    def close(self):
        pass


def progress_bar(maxValue=100, prefix="", print_msg=True, stream=None):
    """MintPy's progressBar on an interactive terminal, LineProgress otherwise."""
    out = stream or sys.stdout
    if print_msg and getattr(out, "isatty", lambda: False)():
        from mintpy.utils import ptime
        return ptime.progressBar(maxValue=maxValue, prefix=prefix, print_msg=print_msg)
    return LineProgress(maxValue=maxValue, prefix=prefix, print_msg=print_msg, stream=stream)
