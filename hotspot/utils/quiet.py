"""Quiet library start-up: a step's log should read like smallbaselineApp's.

TensorFlow writes its start-up lines (oneDNN notice, CPU-feature notice, absl's "before
InitializeLog" line) from C++ straight to file descriptor 2 while it is imported; with
TensorFlow 2.21, TF_CPP_MIN_LOG_LEVEL does not silence the absl ones. They are informational
and repeat in every step, so the import runs with descriptor 2 captured and every other line
is passed on unchanged.
"""
import contextlib
import logging
import os
import re
import sys
import tempfile

STARTUP_NOISE = [re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"cuda_init\.cc|Could not find cuda drivers|failed call to cuInit",
)]
# One predict function is traced per model (batches are padded to one shape), but TensorFlow
# counts the traces of every model's predict function together (same code object) and calls
# the fifth model of a process "retracing".
RETRACING = re.compile(r"triggered tf\.function retracing")


@contextlib.contextmanager
def filtered_stderr(patterns=STARTUP_NOISE):
    """Capture descriptor 2 (C/C++ writes included) and pass on the lines matching none of
    patterns when the block ends."""
    fd = 2                          # where C/C++ code writes, whatever sys.stderr is
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not any(p.search(line) for p in patterns)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _DropRetracing(logging.Filter):
    def filter(self, record):
        return not RETRACING.search(record.getMessage())


def import_keras():
    """keras (and its backend) imported without the start-up noise; the module."""
    if "keras" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with filtered_stderr():
            import keras  # noqa: F401
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _DropRetracing) for f in logger.filters):
        logger.addFilter(_DropRetracing())
    return sys.modules["keras"]
