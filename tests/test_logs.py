"""A step's log reads like smallbaselineApp's: one progress line per long loop, quiet libraries
(issue 14, point 9)."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hotspot.utils.progress import LineProgress, progress_bar

REPO = Path(__file__).resolve().parents[1]
NOISE = [re.compile(p) for p in (
    r"oneDNN custom operations",                         # TensorFlow start-up
    r"absl::InitializeLog",
    r"cpu_feature_guard|This TensorFlow binary is optimized",
    r"triggered tf\.function retracing",
    r"^Epoch \d+/\d+",                                   # keras verbose fit
    r"\d+/\d+ - \d+m?s - ",
    r"\[>\s*\]|\[=+>",                                   # MintPy's animated progress bar
    r"\r",
)]


def noisy(lines):
    return [line for line in lines if any(p.search(line) for p in NOISE)]


def test_progress_in_a_log_is_one_line_per_tenth():
    out = io.StringIO()                     # not a terminal, like `hotspotApp.py ... > log`
    bar = progress_bar(maxValue=1000, prefix="pairs: ", stream=out)
    assert isinstance(bar, LineProgress)
    for i in range(1, 1001):
        bar.update(i, suffix=f"{i}/1000")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("pairs:  10 % 100/1000") and lines[-1].startswith("pairs: 100 %")
    assert not noisy(lines) and "\r" not in out.getvalue()


def test_progress_on_a_terminal_is_mintpys_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    from mintpy.utils import ptime
    assert isinstance(progress_bar(maxValue=10, stream=Tty()), ptime.progressBar)


@pytest.mark.slow
def test_train_and_predict_log_is_quiet_and_short(tmp_path):
    """train_lstm (4 fits) + predict in one process, output to a file: no TensorFlow start-up
    line, no retracing warning, no keras epoch line, no progress-bar fragment."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_lstm import make_tiny_scene
    make_tiny_scene(tmp_path)
    template = tmp_path / "t.cfg"
    template.write_text("hotspot.train_lstm.numSample = 800\nhotspot.train_lstm.epochs = 12\n"
                        "hotspot.train_lstm.batchSize = 64\nhotspot.train_lstm.patience = 0\n"
                        "mintpy.compute.maxMemory = 0.01\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)           # the package sets its own default
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "hotspot.cli.hotspotApp", str(template),
                               "--start", "train_lstm", "--end", "predict"], env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=900)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = text.splitlines()
    assert not noisy(lines), noisy(lines)[:5]
    # 4 fits x (2 epoch lines + 3) + predict: ~50 lines; keras alone wrote 96 epoch lines
    assert len(lines) < 70, len(lines)
    assert sum("epoch 10/12" in line for line in lines) == 4
    assert any(re.match(r"\s*100 % 600/600", line) for line in lines)


def test_startup_noise_written_to_fd2_is_dropped_and_the_rest_kept(capfd):
    from hotspot.utils.quiet import filtered_stderr
    with filtered_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1 port.cc:153] oneDNN custom operations are on. You may see\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert err == "a real problem\n"


def test_retracing_warning_filtered(caplog):
    import logging
    from hotspot.utils.quiet import _DropRetracing
    logger = logging.getLogger("hotspot-test-tf")
    logger.addFilter(_DropRetracing())
    with caplog.at_level(logging.WARNING, logger="hotspot-test-tf"):
        logger.warning("5 out of the last 5 calls to <function f at 0x1> triggered tf.function "
                       "retracing. Tracing is expensive")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
