"""Bad inputs and killed runs, as a user meets them (issue 15).

The catalogue runs hotspotApp.py in-process on copies of one tiny simulated scene whose
first steps were run once; each bad input must give exit 1, exactly one `ERROR:` line that
names the file or template key, no traceback, and leave every earlier file byte-identical
(and no new file, temporary or partial). The crash tests kill a step at a given output
write (a subprocess ends with os._exit, leaving what a SIGKILL leaves) or after a random
delay, re-run it, and compare every file with an uninterrupted run's.
"""
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from hotspot.cli import hotspotApp as cli
from hotspot.simulation import simulate_scene

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
# Small but complete settings; euclidean tskm with a fixed k keeps the base at ~20 s.
FAST = """hotspot.randomSeed = 0
hotspot.covariogram.numPair = 100000
hotspot.tskm.metric = euclidean
hotspot.tskm.numCluster = 3
hotspot.tskm.numSample = 400
hotspot.tskm.maxIter = 5
hotspot.train_lstm.numSample = 600
hotspot.train_lstm.epochs = 1
hotspot.train_lstm.split = random
hotspot.plot.dpi = 40
"""
BASE_STEPS = ["load_data", "covariogram", "tskm", "dbscan", "dispersion"]


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of hotspotApp.py ARGV run in this process."""
    capsys.readouterr()
    try:
        cli.main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder):
    """{relative path: sha256} of every file under folder."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A MintPy scene (60 x 80 pixels, 30 epochs) with load_data ... dbscan and dispersion
    run; cases work on copies (copytree keeps the mtimes update mode compares)."""
    root = tmp_path_factory.mktemp("bad_inputs_base")
    simulate_scene(root, preset="small", difficulty="easy", seed=3, num_date=30,
                   print_msg=False)
    (root / "site.cfg").write_text(FAST)
    for step in BASE_STEPS:
        cli.main([str(root / "site.cfg"), "--dostep", step])
    return root


def work_copy(base, tmp_path, name="work"):
    work = tmp_path / name
    shutil.copytree(base, work, symlinks=True)
    return work


# ------------------------------------------------------------------ the catalogue
# Each case: (id, prepare(work) -> argv, words the ERROR line must contain).
# prepare edits the copy of the base scene; "{cfg}" style argv is built inside it.

def _cfg(work, extra, name="site.cfg"):
    (work / name).write_text(FAST + textwrap.dedent(extra))
    return work / name


def _key(extra, step, force=False):
    def prepare(work):
        return [_cfg(work, extra), "--dostep", step] + (["--force"] if force else [])
    return prepare


def _args(*args):
    def prepare(work):
        return [_cfg(work, "")] + list(args)
    return prepare


def _set_h5(path, name, values):
    with h5py.File(path, "r+") as f:
        f[name][...] = values


def _bad_date_ts(work):
    with h5py.File(work / "timeseries.h5", "r+") as f:
        dates = f["date"][:]
        dates[3] = b"20170132"
        f["date"][...] = dates
    return [_cfg(work, ""), "--dostep", "load_data"]


def _nan_epoch_ts(work):
    with h5py.File(work / "timeseries.h5", "r+") as f:
        f["timeseries"][4] = np.nan
        bad = f["date"][4].decode()
    (work / "expected.txt").write_text(bad)
    return [_cfg(work, ""), "--dostep", "load_data"]


def _empty(name, step="load_data", extra=""):
    def prepare(work):
        (work / name).write_bytes(b"")
        return [_cfg(work, extra), "--dostep", step]
    return prepare


def _truncate(name, step):
    def prepare(work):
        data = (work / name).read_bytes()
        (work / name).write_bytes(data[:len(data) // 2])
        return [_cfg(work, ""), "--dostep", step, "--force"]
    return prepare


def _dir_in_place(name, step):
    def prepare(work):
        (work / name).unlink()
        (work / name).mkdir()
        return [_cfg(work, ""), "--dostep", step]
    return prepare


def _wabinsar(edit):
    def prepare(work):
        wab = work / "wabinsar"
        edit(wab)
        return [_cfg(wab, "hotspot.load.processor = wabinsar\n"), "--dostep", "load_data"]
    return prepare


def _dates_txt(mutate):
    def edit(wab):
        dates = (wab / "dates.txt").read_text().split()
        (wab / "dates.txt").write_text("\n".join(mutate(dates)) + "\n")
    return edit


def _egms(edit):
    def prepare(work):
        egms = work / "egms"
        egms.mkdir()
        text = (DATA / "egms_subset.csv").read_text()
        (egms / "EGMS_subset.csv").write_text(edit(text))
        return [_cfg(egms, "hotspot.covariogram.maxDistance = 5\n"), "--dostep", "load_data"]
    return prepare


def _cut_last_row(text):
    lines = text.rstrip("\n").split("\n")
    lines[-1] = lines[-1][:len(lines[-1]) // 2]
    return "\n".join(lines) + "\n"


def _short_middle_row(text):
    lines = text.rstrip("\n").split("\n")
    lines[5] = ",".join(lines[5].split(",")[:-3])
    return "\n".join(lines) + "\n"


def _egms_bad_date(text):
    header, rest = text.split("\n", 1)
    cols = header.split(",")
    date_cols = [i for i, c in enumerate(cols) if len(c.strip()) == 8 and c.strip().isdigit()]
    cols[date_cols[2]] = cols[date_cols[2]][:4] + "1332"
    return ",".join(cols) + "\n" + rest


def _no_equal_sign(work):
    cfg = _cfg(work, "")
    cfg.write_text(cfg.read_text() + "hotspot.tskm.metric dtw\n")
    return [cfg, "--dostep", "tskm"]


def _missing_template(work):
    return [work / "missing.cfg", "--dostep", "tskm"]


CASES = [
    # command line
    ("dostep-unknown", _args("--dostep", "foo"), ["unknown step 'foo'"]),
    ("start-unknown", _args("--start", "tskmm"), ["unknown step 'tskmm'"]),
    ("dostep-with-start", _args("--dostep", "tskm", "--start", "load_data"), ["--dostep"]),
    ("start-after-end", _args("--start", "predict", "--end", "tskm"), ["--start predict"]),
    ("template-missing", _missing_template, ["missing.cfg"]),
    ("workdir-missing", lambda w: ["--dir", w / "nowhere", "--dostep", "tskm"], ["nowhere"]),
    # template syntax and keys
    ("key-typo", _key("hotspot.tskm.metrc = dtw\n", "tskm"),
     ["hotspot.tskm.metrc", "did you mean 'hotspot.tskm.metric'"]),
    ("key-typo-step", _key("hotspot.dbscan.epsilon = 1\n", "dbscan"), ["hotspot.dbscan.epsilon"]),
    ("line-without-equal", _no_equal_sign, ["site.cfg, line", "hotspot.tskm.metric dtw"]),
    # numbers: NaN, inf, out of range
    ("learningRate-nan", _key("hotspot.train_lstm.learningRate = nan\n", "train_lstm"),
     ["hotspot.train_lstm.learningRate", "finite"]),
    ("minProbability-nan", _key("hotspot.predict.minProbability = nan\n", "predict"),
     ["hotspot.predict.minProbability"]),
    ("significance-nan", _key("hotspot.dispersion.significance = nan\n", "dispersion"),
     ["hotspot.dispersion.significance"]),
    ("significance-2", _key("hotspot.dispersion.significance = 2\n", "dispersion"),
     ["hotspot.dispersion.significance", "[0.0, 1.0]"]),
    ("maxMemory-nan", _key("mintpy.compute.maxMemory = nan\n", "covariogram"),
     ["mintpy.compute.maxMemory"]),
    ("maxMemory-inf", _key("mintpy.compute.maxMemory = inf\n", "covariogram"),
     ["mintpy.compute.maxMemory"]),
    ("maxMemory-negative", _key("mintpy.compute.maxMemory = -1\n", "tskm"),
     ["mintpy.compute.maxMemory"]),
    ("randomSeed-1e20", _key("hotspot.randomSeed = 1e20\n", "covariogram"),
     ["hotspot.randomSeed", "4294967295"]),
    ("randomSeed-negative", _key("hotspot.randomSeed = -1\n", "dbscan"), ["hotspot.randomSeed"]),
    ("randomSeed-fraction", _key("hotspot.randomSeed = 1.5\n", "tskm"), ["hotspot.randomSeed"]),
    ("numPair-1e12", _key("hotspot.covariogram.numPair = 1e12\n", "covariogram"),
     ["hotspot.covariogram.numPair", "1000000000"]),
    ("numPair-inf", _key("hotspot.covariogram.numPair = inf\n", "covariogram"),
     ["hotspot.covariogram.numPair"]),
    ("numPair-zero", _key("hotspot.covariogram.numPair = 0\n", "covariogram"),
     ["hotspot.covariogram.numPair"]),
    ("maxDistance-below-bin", _key("hotspot.covariogram.maxDistance = 0.1\n", "covariogram"),
     ["hotspot.covariogram.maxDistance"]),
    ("gamma-nan", _key("hotspot.tskm.gamma = nan\n", "tskm"), ["hotspot.tskm.gamma"]),
    ("metric-unknown", _key("hotspot.tskm.metric = cosine\n", "tskm"), ["hotspot.tskm.metric"]),
    ("numClusterRange-reversed", _key("hotspot.tskm.numCluster = auto\n"
                                      "hotspot.tskm.numClusterRange = 6-2\n", "tskm"),
     ["hotspot.tskm.numClusterRange"]),
    ("numCluster-above-pixels", _key("hotspot.tskm.numCluster = 4500\n"
                                     "hotspot.tskm.numSample = 5000\n", "tskm"),
     ["hotspotStack.h5", "hotspot.tskm.numSample"]),
    ("numSample-text", _key("hotspot.tskm.numSample = many\n", "tskm"),
     ["hotspot.tskm.numSample", "integer"]),
    # compute keys are no step's keys (they do not change results): --force runs tskm
    ("cluster-slurm-no-config", _key("mintpy.compute.cluster = slurm\n", "tskm", True),
     ["mintpy.compute.cluster = slurm"]),
    ("cluster-unknown", _key("mintpy.compute.cluster = sge\n", "tskm", True),
     ["mintpy.compute.cluster"]),
    ("numWorker-zero", _key("mintpy.compute.numWorker = 0\n", "tskm", True),
     ["mintpy.compute.numWorker"]),
    ("eps-nan", _key("hotspot.dbscan.eps = nan\n", "dbscan"), ["hotspot.dbscan.eps"]),
    ("eps-negative", _key("hotspot.dbscan.eps = -1\n", "dbscan"), ["hotspot.dbscan.eps"]),
    ("eps-per-cluster-count", _key("hotspot.dbscan.eps = 1, 2\n", "dbscan"),
     ["hotspot.dbscan.eps", "3 temporal clusters"]),
    ("minSamples-zero", _key("hotspot.dbscan.minSamples = 0\n", "dbscan"),
     ["hotspot.dbscan.minSamples"]),
    ("minPixel-zero", _key("hotspot.dispersion.minPixel = 0\n", "dispersion"),
     ["hotspot.dispersion.minPixel"]),
    ("maxStandardDistance-inf", _key("hotspot.dispersion.maxStandardDistance = inf\n",
                                     "dispersion"), ["hotspot.dispersion.maxStandardDistance"]),
    ("dispersion-input-missing", _key("hotspot.dispersion.input = nothing.h5\n", "dispersion"),
     ["nothing.h5"]),
    ("dpi-too-small", _key("hotspot.plot.dpi = 5\n", "plot"), ["hotspot.plot.dpi"]),
    ("processor-unknown", _key("hotspot.load.processor = isce\n", "load_data"),
     ["hotspot.load.processor"]),
    ("timeseriesFile-missing", _key("hotspot.load.timeseriesFile = gone.h5\n", "load_data"),
     ["gone.h5"]),
    # input files
    ("date-impossible-h5", _bad_date_ts, ["timeseries.h5", "20170132"]),
    ("epoch-all-nan", _nan_epoch_ts, ["timeseries.h5", "@expected"]),
    ("timeseries-0-byte", _empty("timeseries.h5"), ["timeseries.h5"]),
    ("stack-truncated", _truncate("hotspotStack.h5", "covariogram"), ["hotspotStack.h5"]),
    ("stack-missing", lambda w: ((w / "hotspotStack.h5").unlink(),
                                 [_cfg(w, ""), "--dostep", "covariogram"])[1],
     ["hotspotStack.h5"]),
    ("tskm-labels-truncated", _truncate("clusterTSKM.h5", "dbscan"), ["clusterTSKM.h5"]),
    ("filtered-corrupt-train", _truncate("hotspotFiltered.h5", "train_lstm"),
     ["hotspotFiltered.h5", "tskm"]),
    ("output-is-directory", _dir_in_place("covariogram.h5", "covariogram"),
     ["covariogram.h5", "directory"]),
    ("wabinsar-date-impossible", _wabinsar(_dates_txt(lambda d: d[:2] + ["20170132"] + d[3:])),
     ["dates.txt", "20170132"]),
    ("wabinsar-dates-unsorted", _wabinsar(_dates_txt(lambda d: [d[1], d[0]] + d[2:])),
     ["dates.txt", "sorted"]),
    ("wabinsar-mat-0-byte", _wabinsar(lambda w: (w / "R_TS_den.mat").write_bytes(b"")),
     ["R_TS_den.mat"]),
    ("wabinsar-velocity-0-byte", _wabinsar(lambda w: (w / "MVel.mat").write_bytes(b"")),
     ["MVel.mat"]),
    ("wabinsar-mat-garbage", _wabinsar(lambda w: (w / "elpx_ll.mat").write_bytes(
        b"MATLAB 5.0 MAT-file" * 4)), ["elpx_ll.mat"]),
    ("egms-last-row-cut", _egms(_cut_last_row), ["EGMS_subset.csv", "row 200"]),
    ("egms-short-row", _egms(_short_middle_row), ["EGMS_subset.csv", "row 5"]),
    ("egms-date-impossible", _egms(_egms_bad_date), ["EGMS_subset.csv", "1332"]),
    ("egms-0-byte", _egms(lambda text: ""), ["EGMS_subset.csv"]),
]
TEMPLATE_PARSE = {"key-typo", "key-typo-step", "line-without-equal"}


def test_catalogue_has_at_least_40_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_catalogue_case(case, base, tmp_path, capsys):
    name, prepare, words = case
    work = work_copy(base, tmp_path)
    argv = prepare(work)
    before = snapshot(work)
    code, out, err = run_cli(argv, capsys)
    assert code == 1, f"{name}: exit {code}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, err
    for word in words:
        if word == "@expected":
            word = (work / "expected.txt").read_text()
        assert word in errors[0], f"{name}: {word!r} not in {errors[0]!r}"
    after = snapshot(work)
    if name not in TEMPLATE_PARSE:
        # the merged template records the configuration asked for, like smallbaselineApp
        for snap in (before, after):
            for key in [k for k in snap if k.endswith("hotspotApp.cfg")]:
                del snap[key]
    differ = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
    assert not differ, f"{name}: files changed, added or removed: {differ}"


# ------------------------------------------------------------------ file system

@contextlib.contextmanager
def read_only(folder):
    """Make folder read-only: chmod, or for root (whom chmod does not stop) a read-only
    bind mount; skips the test where neither is possible."""
    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("running as root without mount: cannot make a read-only directory")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_workdir(base, tmp_path, capsys):
    work = work_copy(base, tmp_path)
    cfg = work / "site.cfg"
    before = snapshot(work)
    with read_only(work):
        # all up to date: runs and writes nothing (not even the merged template)
        code, out, err = run_cli([cfg, "--dostep", "dbscan"], capsys)
        assert code == 0, err
        assert "skip step dbscan" in out
        # a step to run: one ERROR line naming a file of the work directory
        code, out, err = run_cli([cfg, "--dostep", "dbscan", "--force"], capsys)
        assert code == 1
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
        assert len(errors) == 1 and str(work) in errors[0], err
    assert snapshot(work) == before


def test_disk_full_checked_before_writing(base, tmp_path, capsys, monkeypatch):
    work = work_copy(base, tmp_path)
    before = snapshot(work)
    import hotspot.utils.h5io as h5io
    real = shutil.disk_usage
    monkeypatch.setattr(h5io.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=100 * 1024))
    code, out, err = run_cli([work / "site.cfg", "--dostep", "load_data", "--force"], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.count("ERROR:") == 1 and "hotspotStack.h5: not enough free disk space" in err
    assert snapshot(work) == before


def test_disk_full_real_filesystem(base, tmp_path):
    """A real nearly full file system (0.6 MB left for a 0.7 MB stack): HDF5 used to crash
    the interpreter (exit 139); now one ERROR line. Needs root to mount (skipped otherwise)."""
    mnt = tmp_path / "small_fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root and mount for a small file system")
    try:
        for name in ("timeseries.h5", "velocity.h5", "temporalCoherence.h5", "maskTempCoh.h5"):
            shutil.copy2(base / name, mnt / name)
        shutil.copytree(base / "inputs", mnt / "inputs")
        # leave 0.6 MB: the template fits, the 0.7 MB stack does not
        free = shutil.disk_usage(mnt).free
        filler = mnt / "filler.bin"
        filler.write_bytes(b"\0" * (free - 600 * 1024))
        proc = subprocess.run([sys.executable, "-m", "hotspot.cli.hotspotApp", "--dir",
                               str(mnt), "--dostep", "load_data"], capture_output=True,
                              text=True, env=_env(), timeout=300)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert proc.stderr.count("ERROR:") == 1 and "Traceback" not in proc.stderr
        assert "hotspotStack.h5" in proc.stderr
        assert not list(mnt.glob("hotspotStack*"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_symlinked_template_keeps_its_directory(base, tmp_path, capsys):
    work = work_copy(base, tmp_path)
    elsewhere = tmp_path / "templates"
    elsewhere.mkdir()
    (elsewhere / "site.cfg").write_text(FAST)
    (work / "site.cfg").unlink()
    (work / "site.cfg").symlink_to(elsewhere / "site.cfg")
    code, out, err = run_cli([work / "site.cfg", "--dostep", "dbscan"], capsys)
    assert code == 0, err
    assert f"work directory: {work}\n" in out and "skip step dbscan" in out
    assert list(elsewhere.iterdir()) == [elsewhere / "site.cfg"]


def test_temp_files_of_killed_runs_removed(base, tmp_path, capsys):
    work = work_copy(base, tmp_path)
    stale = [work / "hotspotStack.tmp999999.h5", work / "hotspotFiltered.tmp12.h5",
             work / "clusterTSKM.tmp4242.h5"]
    for path in stale:
        path.write_bytes(b"half written")
    keep = work / "notes.tmp12.txt"
    keep.write_text("not ours")
    code, out, err = run_cli([work / "site.cfg", "--start", "load_data", "--end", "tskm"], capsys)
    assert code == 0, err
    assert "removed 1 temporary file(s) of an interrupted run: hotspotStack.tmp999999.h5" in out
    assert not any(p.exists() for p in stale) and keep.exists()
    assert out.count("skip step") == 3                  # all up to date nonetheless


def test_update_mode_checks_every_output(base, tmp_path, capsys):
    """The issue's case: dispersion.h5 written with the new minPixel, hotspot.h5 still the
    old one (a kill between the two writes) -> the step is not skipped."""
    work = work_copy(base, tmp_path)
    old_hotspot = (work / "hotspot.h5").read_bytes()
    cfg = _cfg(work, "hotspot.dispersion.minPixel = 35\n")
    assert run_cli([cfg, "--dostep", "dispersion"], capsys)[0] == 0
    new_hotspot = (work / "hotspot.h5").read_bytes()
    assert new_hotspot != old_hotspot
    (work / "hotspot.h5").write_bytes(old_hotspot)        # the stale second output
    os.utime(work / "hotspot.h5")
    code, out, err = run_cli([cfg, "--dostep", "dispersion"], capsys)
    assert code == 0 and "skip step dispersion" not in out
    assert (work / "hotspot.h5").read_bytes() == new_hotspot


# ------------------------------------------------------------------ killed runs

KILLER = """
import os, sys
workdir, n, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real, count = os.replace, [0]

def replace(src, dst, *args, **kwargs):
    # the n-th output renamed into the work directory (the merged template excepted)
    if not str(dst).startswith(workdir) or str(dst).endswith("hotspotApp.cfg"):
        return real(src, dst, *args, **kwargs)
    count[0] += 1
    if count[0] == n and when == "before":
        os._exit(137)                 # killed while writing: the temporary file stays
    real(src, dst, *args, **kwargs)
    if count[0] == n and when == "after":
        os._exit(137)                 # killed between this write and the next

os.replace = replace
from hotspot.cli import hotspotApp
hotspotApp.main(sys.argv[4:])
"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def kill_at(work, n, when, argv):
    proc = subprocess.run([sys.executable, "-c", KILLER, str(work), str(n), when]
                          + [str(a) for a in argv], capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert proc.returncode == 137, proc.stdout[-2000:] + proc.stderr[-3000:]


def crash_and_rerun(base, tmp_path, capsys, step, extra, points, compare=None):
    """For each (n, when): a copy of the base, `step` run with the changed keys `extra`
    and killed at its n-th output write, then re-run; every file must equal an uninterrupted
    run's (same path, so that the paths stored in attributes agree)."""
    work = tmp_path / "work"
    shutil.copytree(base, work, symlinks=True)
    argv = [_cfg(work, extra), "--dostep", step]
    assert run_cli(argv, capsys)[0] == 0
    reference = snapshot(work)
    reference_dir = tmp_path / "reference"
    shutil.copytree(work, reference_dir, symlinks=True)
    for n, when in points:
        shutil.rmtree(work)
        shutil.copytree(base, work, symlinks=True)
        argv = [_cfg(work, extra), "--dostep", step]
        kill_at(work, n, when, argv)
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        assert f"skip step {step}" not in out, f"{step} killed at write {n} ({when}) skipped"
        if compare is None:
            got = snapshot(work)
            differ = sorted(k for k in set(got) | set(reference) if got.get(k) != reference.get(k))
            assert not differ, f"{step} killed at write {n} ({when}): {differ} differ"
        else:
            compare(work, reference_dir)
        # and now it is up to date
        code, out, err = run_cli(argv, capsys)
        assert code == 0 and f"skip step {step}" in out


@pytest.mark.parametrize("step, extra, points", [
    ("load_data", "hotspot.load.maskFile = no\n", [(1, "before")]),
    ("covariogram", "hotspot.covariogram.binSize = 0.75\n", [(1, "before")]),
    ("tskm", "hotspot.tskm.numCluster = 4\n", [(1, "after"), (2, "before")]),
    ("dbscan", "hotspot.dbscan.minSamples = 6\n", [(1, "before")]),
    ("dispersion", "hotspot.dispersion.minPixel = 35\n", [(1, "after"), (2, "before")]),
], ids=["load_data", "covariogram", "tskm", "dbscan", "dispersion"])
def test_killed_step_reruns_to_the_same_outputs(base, tmp_path, capsys, step, extra, points):
    crash_and_rerun(base, tmp_path, capsys, step, extra, points)


@pytest.mark.slow
def test_sigkill_at_random_times_reruns_to_the_same_outputs(base, tmp_path, capsys):
    """tskm killed (SIGKILL) after random delays over its run: the re-run always equals the
    uninterrupted run."""
    import signal
    import time
    extra = "hotspot.tskm.numCluster = 4\n"
    work = tmp_path / "work"
    shutil.copytree(base, work, symlinks=True)
    argv = [_cfg(work, extra), "--dostep", "tskm"]
    t0 = time.time()
    assert run_cli(argv, capsys)[0] == 0
    reference = snapshot(work)
    rng = np.random.default_rng(15)
    for delay in sorted(rng.uniform(1.0, 6.0, size=3)):
        shutil.rmtree(work)
        shutil.copytree(base, work, symlinks=True)
        argv = [_cfg(work, extra), "--dostep", "tskm"]
        proc = subprocess.Popen([sys.executable, "-m", "hotspot.cli.hotspotApp"]
                                + [str(a) for a in argv], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        assert snapshot(work) == reference, f"tskm killed after {delay:.1f} s"
    assert time.time() - t0 < 600


def _same_predictions(work, reference):
    for name in ("clusterLSTM.h5", "clusterLSTMP.h5"):
        with h5py.File(work / name, "r") as a, h5py.File(reference / name, "r") as b:
            np.testing.assert_array_equal(a["pixelLabel"][:], b["pixelLabel"][:])
            np.testing.assert_allclose(a["pixelProbability"][:], b["pixelProbability"][:],
                                       atol=1e-6)
    with h5py.File(work / "trainLSTM.h5", "r") as a, h5py.File(reference / "trainLSTM.h5") as b:
        np.testing.assert_array_equal(a["sample/index"][:], b["sample/index"][:])
        assert a.attrs["hotspot.train_lstm.numSample"] == b.attrs["hotspot.train_lstm.numSample"]


@pytest.mark.slow
def test_killed_train_lstm_and_predict_rerun(base, tmp_path, capsys):
    """train_lstm killed after both models were saved but before trainLSTM.h5 (the models
    are new, trainLSTM.h5 and its keys old), predict between its two label files: each
    re-run equals an uninterrupted run."""
    work = work_copy(base, tmp_path, "trained")
    cfg = _cfg(work, "")
    for step in ("train_lstm", "predict"):
        assert run_cli([cfg, "--dostep", step], capsys)[0] == 0
    extra = "hotspot.train_lstm.numSample = 700\n"

    def train_then_predict(work_dir, ref_dir):
        code, out, err = run_cli([work_dir / "site.cfg", "--dostep", "predict"], capsys)
        assert code == 0 and "skip step predict" not in out, err
        if not (ref_dir / "clusterLSTM.h5").stat().st_mtime_ns > \
                (ref_dir / "trainLSTM.h5").stat().st_mtime_ns:
            assert run_cli([ref_dir / "site.cfg", "--dir", ref_dir, "--dostep", "predict"],
                           capsys)[0] == 0
        _same_predictions(work_dir, ref_dir)

    # json, keras, json, keras written; killed before trainLSTM.h5
    crash_and_rerun(work, tmp_path / "train", capsys, "train_lstm", extra, [(4, "after")],
                    compare=train_then_predict)
    crash_and_rerun(work, tmp_path / "predict", capsys, "predict",
                    "hotspot.predict.minProbability = 0.6\n", [(1, "after")])


@pytest.mark.slow
def test_killed_plot_reruns_to_the_same_outputs(base, tmp_path, capsys):
    """plot killed after its third figure: figures newer than the manifest plot.h5 of the
    run before make the re-run draw all again."""
    crash_and_rerun(base, tmp_path, capsys, "plot", "hotspot.plot.dpi = 45\n", [(3, "after")])
