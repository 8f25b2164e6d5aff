"""Template merge, auto values, typed getters and the workflow command line."""
import h5py
import pytest

from hotspot import STEP_LIST
from hotspot.cli import hotspotApp as cli
from hotspot.hotspotApp import StepContext, is_up_to_date, select_steps
from hotspot.utils.errors import HotspotError
from hotspot.utils.template import (Config, config_from_dict, default_values, merge_template,
                                    read_template, resolve_auto)


def test_default_template_has_every_step_and_mintpy_keys():
    keys = default_values()
    for prefix in ("hotspot.load.", "hotspot.covariogram.", "hotspot.tskm.", "hotspot.dbscan.",
                   "hotspot.train_lstm.", "hotspot.predict.", "hotspot.dispersion.", "hotspot.plot."):
        assert any(k.startswith(prefix) for k in keys), prefix
    for key in ("mintpy.compute.maxMemory", "mintpy.compute.cluster", "mintpy.compute.numWorker",
                "mintpy.compute.config"):
        assert key in keys


def test_merge_keeps_comments_and_user_values(tmp_path):
    user = tmp_path / "site.cfg"
    user.write_text("hotspot.tskm.metric = dtw\nmintpy.compute.maxMemory = 2\n")
    raw, merged = merge_template(user, tmp_path / "work")
    assert raw["hotspot.tskm.metric"] == "dtw"
    assert raw["hotspot.covariogram.numPair"] == "auto"
    text = merged.read_text()
    assert "#[softdtw / dtw / euclidean]" in text      # comments kept
    assert read_template(merged)["hotspot.tskm.metric"] == "dtw"
    assert read_template(merged)["mintpy.compute.maxMemory"] == "2"


def test_unknown_key_is_an_error_with_closest_key(tmp_path):
    user = tmp_path / "site.cfg"
    user.write_text("hotspot.tskm.metrc = dtw\n")
    with pytest.raises(HotspotError, match="unknown key 'hotspot.tskm.metrc'; did you mean "
                                           "'hotspot.tskm.metric'"):
        merge_template(user, tmp_path / "work")
    assert not (tmp_path / "work" / "hotspotApp.cfg").exists()
    # keys of other MintPy apps may share the template: a warning only
    user.write_text("mintpy.load.processor = isce\n")
    with pytest.warns(UserWarning, match="unknown key 'mintpy.load.processor' is ignored"):
        merge_template(user, tmp_path / "work")


def test_auto_values_resolved():
    values = resolve_auto(default_values())
    assert values["hotspot.tskm.numSample"] == "2000"
    assert values["hotspot.covariogram.numPair"] == "auto"      # computed from the scene
    assert values["hotspot.tskm.metric"] == "softdtw"
    assert values["hotspot.dbscan.eps"] == "auto"          # computed by the step
    assert values["mintpy.compute.maxMemory"] == "4"
    slurm = default_values()
    slurm["mintpy.compute.cluster"] = "slurm"
    assert resolve_auto(slurm)["mintpy.compute.numWorker"] == "40"


def test_typed_getters_name_the_key():
    cfg = config_from_dict({"hotspot.tskm.numSample": "abc", "hotspot.dbscan.eps": "2, 1,5",
                            "hotspot.tskm.metric": "DTW"})
    with pytest.raises(HotspotError, match="hotspot.tskm.numSample = 'abc'.*integer"):
        cfg.get_int("hotspot.tskm.numSample")
    assert cfg.get_list("hotspot.dbscan.eps") == [2.0, 1.0, 5.0]
    assert cfg.get_choice("hotspot.tskm.metric", ["softdtw", "dtw", "euclidean"]) == "dtw"
    assert cfg.get_range("hotspot.tskm.numClusterRange") == (2, 10)
    assert cfg.get_int("hotspot.tskm.bandRadius", allow_none=True) is None
    with pytest.raises(HotspotError, match="value >= 5"):
        cfg.get_int("hotspot.tskm.maxIter", min_value=5000)
    with pytest.raises(HotspotError, match="unknown key"):
        config_from_dict({"hotspot.nope": 1})


def test_select_steps():
    assert select_steps() == STEP_LIST
    assert select_steps(dostep="tskm") == ["tskm"]
    assert select_steps(start="dbscan", end="predict") == ["dbscan", "train_lstm", "predict"]
    with pytest.raises(HotspotError, match="comes after"):
        select_steps(start="predict", end="tskm")


def test_cli_print_and_generate(tmp_path, capsys):
    cli.main(["-H"])
    assert "hotspot.tskm.metric" in capsys.readouterr().out
    cli.main(["-g", "--dir", str(tmp_path)])
    assert (tmp_path / "hotspotApp.cfg").is_file()
    assert "hotspot.load.processor" in (tmp_path / "hotspotApp.cfg").read_text()


def test_cli_bad_template_exits_with_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path / "missing.cfg")])
    assert exc.value.code == 1
    assert "missing.cfg: template file not found" in capsys.readouterr().err


def test_cli_bad_value_exits_with_key(tmp_path, capsys):
    cfg = tmp_path / "site.cfg"
    cfg.write_text("mintpy.compute.maxMemory = lots\n")
    (tmp_path / "hotspotStack.h5").write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        cli.main([str(cfg), "--dostep", "covariogram"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "ERROR:" in err and "Traceback" not in err


class _FakeStep:
    """A step module stand-in: one input, one HDF5 output holding the step's attrs."""

    def __init__(self, workdir):
        self.inp = workdir / "in.txt"
        self.out = workdir / "out.h5"

    def inputs(self, ctx):
        return [self.inp]

    def outputs(self, ctx):
        return [self.out]

    def write(self, ctx, step):
        with h5py.File(self.out, "w") as f:
            for k, v in ctx.step_attrs(step).items():
                f.attrs[k] = v


def test_update_mode(tmp_path):
    ctx = StepContext(workdir=tmp_path, config=config_from_dict())
    step = _FakeStep(tmp_path)
    step.inp.write_text("x")
    assert not is_up_to_date("tskm", step, ctx)          # no output yet
    step.write(ctx, "tskm")
    assert is_up_to_date("tskm", step, ctx)
    changed = StepContext(workdir=tmp_path,
                          config=config_from_dict({"hotspot.tskm.metric": "dtw"}))
    assert not is_up_to_date("tskm", step, changed)      # configuration changed
    import os
    os.utime(step.inp, (step.out.stat().st_mtime + 10,) * 2)
    assert not is_up_to_date("tskm", step, ctx)          # input newer than output


def test_config_without_raw_uses_values():
    cfg = Config({"hotspot.randomSeed": "3", "mintpy.compute.maxMemory": "1.5"})
    assert cfg.seed == 3 and cfg.max_memory == 1.5


class _TwoOutputStep(_FakeStep):
    """A step with a model file (written first) and two HDF5 outputs, like train_lstm /
    dispersion."""

    def __init__(self, workdir):
        super().__init__(workdir)
        self.model = workdir / "model.keras"
        self.out2 = workdir / "out2.h5"

    def outputs(self, ctx):
        return [self.out, self.model, self.out2]

    def write_all(self, ctx, step):
        self.model.write_bytes(b"model")
        self.write(ctx, step)
        with h5py.File(self.out2, "w") as f:
            for k, v in ctx.step_attrs(step).items():
                f.attrs[k] = v


def test_update_mode_checks_every_output(tmp_path):
    import os
    ctx = StepContext(workdir=tmp_path, config=config_from_dict())
    changed = StepContext(workdir=tmp_path,
                          config=config_from_dict({"hotspot.tskm.metric": "dtw"}))
    step = _TwoOutputStep(tmp_path)
    step.inp.write_text("x")
    step.write_all(ctx, "tskm")
    assert is_up_to_date("tskm", step, ctx)
    # killed between the two HDF5 writes of a run with other keys: the second is stale
    step.write(changed, "tskm")
    assert not is_up_to_date("tskm", step, changed)
    step.write_all(ctx, "tskm")
    # killed after the model of a new run, before its HDF5 outputs
    later = step.out2.stat().st_mtime + 5
    os.utime(step.model, (later, later))
    assert not is_up_to_date("tskm", step, ctx)


def test_numbers_reject_nan_inf_and_name_the_range():
    cfg = config_from_dict({"hotspot.train_lstm.learningRate": "nan",
                            "mintpy.compute.maxMemory": "inf", "hotspot.randomSeed": "1e20",
                            "hotspot.dbscan.eps": "1, nan", "hotspot.tskm.numSample": "inf"})
    with pytest.raises(HotspotError, match="learningRate = 'nan'.*finite number >= 1e-12"):
        cfg.get_float("hotspot.train_lstm.learningRate", min_value=1e-12)
    with pytest.raises(HotspotError, match="maxMemory = 'inf'"):
        cfg.max_memory
    with pytest.raises(HotspotError, match=r"randomSeed = '1e20'.*\[0, 4294967295\]"):
        cfg.seed
    with pytest.raises(HotspotError, match="hotspot.dbscan.eps"):
        cfg.get_list("hotspot.dbscan.eps")
    with pytest.raises(HotspotError, match="numSample = 'inf'.*integer"):
        cfg.get_int("hotspot.tskm.numSample")


def test_line_without_equal_sign_names_file_and_line(tmp_path):
    user = tmp_path / "site.cfg"
    user.write_text("# comment\nhotspot.tskm.metric = dtw\nhotspot.dbscan.eps 2\n")
    with pytest.raises(HotspotError, match=r"site.cfg, line 3: 'hotspot.dbscan.eps 2'"):
        read_template(user)


def test_unchanged_merged_template_not_rewritten(tmp_path):
    user = tmp_path / "site.cfg"
    user.write_text("hotspot.tskm.metric = dtw\n")
    _, merged = merge_template(user, tmp_path)
    stamp = merged.stat().st_mtime_ns
    merge_template(user, tmp_path)
    assert merged.stat().st_mtime_ns == stamp
