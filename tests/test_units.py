"""Every dataset hotspot writes names its unit (UNIT attribute, MintPy's convention), and the
exports name theirs (issue 14, point 7)."""
import h5py
import numpy as np

from hotspot.utils.h5io import write_h5
from hotspot.utils.labels import write_label_file
from hotspot.utils.stack import StackWriter
from hotspot.utils.units import DATASET_UNITS


def float_datasets_without_unit(path):
    """Names of the numeric datasets of an HDF5 file that have no UNIT attribute."""
    missing = []

    def visit(name, obj):
        if hasattr(obj, "dtype") and obj.dtype.kind in "fiub" and "UNIT" not in obj.attrs:
            missing.append(name)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return missing


def test_stack_and_label_files_carry_units(tmp_path):
    n, dates = 6, ["20200101", "20200113", "20200125"]
    with StackWriter(tmp_path / "hotspotStack.h5", n, dates, {}) as w:
        w.write_block(0, displacement=np.zeros((n, 3)), latitude=np.arange(n) * 0.01,
                      longitude=np.arange(n) * 0.01, velocity=np.full(n, -0.01),
                      velocityStd=np.full(n, 0.001), coherence=np.ones(n))
    assert float_datasets_without_unit(tmp_path / "hotspotStack.h5") == []
    with h5py.File(tmp_path / "hotspotStack.h5", "r") as f:
        assert f["velocity"].attrs["UNIT"] == "m/year"
        assert f["displacement"].attrs["UNIT"] == "m"
        assert f["latitude"].attrs["UNIT"] == "degrees"
    table = {"meanVelocity": np.array([-0.01]), "standardDistance": np.array([0.4]),
             "areaKm2": np.array([0.2]), "centroid": np.zeros((1, 3))}
    write_label_file(tmp_path / "l.h5", np.ones(n), tmp_path / "hotspotStack.h5",
                     datasets=table, units={"centroid": "m"})
    assert float_datasets_without_unit(tmp_path / "l.h5") == []
    with h5py.File(tmp_path / "l.h5", "r") as f:
        got = {k: f[k].attrs["UNIT"] for k in ("meanVelocity", "standardDistance", "areaKm2",
                                               "centroid", "label", "pixelLabel")}
    assert got == {"meanVelocity": "m/year", "standardDistance": "km", "areaKm2": "km2",
                   "centroid": "m", "label": "1", "pixelLabel": "1"}


def test_nested_groups_and_explicit_units_kept(tmp_path):
    write_h5(tmp_path / "x.h5", {"lstm": {"random": {"history": {"loss": np.ones(3)}}},
                                 "covariance": np.ones(2)}, units={"covariance": "mm^2"})
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert f["lstm/random/history/loss"].attrs["UNIT"] == "1"
        assert f["covariance"].attrs["UNIT"] == "mm^2"


def test_every_velocity_and_length_has_a_physical_unit():
    for name, unit in DATASET_UNITS.items():
        if "Velocity" in name and "pValue" not in name and "isSignificant" not in name:
            assert unit == "m/year", name
        if name.endswith("Timeseries") or name in ("displacement", "signalRms", "noiseLevel"):
            assert unit == "m", name


def test_every_export_field_has_a_unit_and_a_description():
    from hotspot.steps.export import COLUMNS, FIELDS
    for _, column, scale in COLUMNS:
        unit, text = FIELDS[column]
        assert unit and len(text) > 10, column
        if scale == 1000.0:                       # m -> mm: the name says mm
            assert "_mm" in column and unit.startswith("mm"), column
    assert FIELDS["area_km2"][0] == FIELDS["footprint_area_km2"][0] == "km2"
    assert "outline" in FIELDS["area_km2"][1] and "footprint" in FIELDS["footprint_area_km2"][1]
