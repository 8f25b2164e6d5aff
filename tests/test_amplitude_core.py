"""Amplitude cores (hotspot.steps.amplitude_core): amplitude, smoothing, hysteresis split."""
import warnings

import numpy as np
import pytest

from hotspot.steps import amplitude_core as core
from hotspot.utils.errors import HotspotError
from hotspot.utils.stack import write_stack


def _grid(size=40):
    rows, cols = np.mgrid[0:size, 0:size]
    return rows.ravel().astype(float), cols.ravel().astype(float)


def test_pixel_amplitude_is_the_std_of_each_row_in_any_block_size(tmp_path):
    rng = np.random.default_rng(0)
    n, t = 2500, 30
    series = rng.normal(0, 0.002, (n, t)) + rng.normal(0, 0.01, (n, 1))   # offsets removed
    series[7, 3:9] = np.nan
    series[11] = np.nan
    dates = [f"2020{m:02d}{d:02d}" for m in range(1, 11) for d in (1, 11, 21)]
    path = tmp_path / "hotspotFiltered.h5"
    write_stack(path, series, dates, np.linspace(34, 35, n), np.linspace(-118, -117, n))
    one = core.pixel_amplitude(path, n, max_memory=4)
    # 1e-6 GB -> blocks of the 1000-pixel minimum: three blocks
    blocks = core.pixel_amplitude(path, n, max_memory=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # the all-NaN row
        expected = np.nanstd(series.astype(np.float32).astype(np.float64), axis=1)
    np.testing.assert_allclose(one, expected, rtol=1e-6)
    np.testing.assert_array_equal(one, blocks)
    assert np.isnan(one[11]) and np.isfinite(one[7])
    with pytest.raises(HotspotError, match="re-run the tskm step"):
        core.pixel_amplitude(path, n + 1, max_memory=4)


def test_smoothing_stays_inside_the_cluster():
    """Cluster 2 (right half) is loud; cluster 1's pixels along the border stay quiet."""
    r, c = _grid()
    rng = np.random.default_rng(1)
    labels = np.where(c < 20, 1, 2)
    amp = 1.0 + 0.05 * rng.standard_normal(r.size)
    amp[labels == 2] += 3.0
    labels[(r < 5) & (c < 5)] = -1                       # not measured: no z
    z = core.amplitude_z(c, r, labels, amp, spacing=1.0)
    assert np.isnan(z[labels == -1]).all() and np.isfinite(z[labels >= 0]).all()
    border = (labels == 1) & (c == 19)
    inner = (labels == 1) & (c < 15) & (r >= 5)
    assert abs(np.median(z[border]) - np.median(z[inner])) < 1.0
    assert (z[labels == 2] > z[labels == 1].max()).all()


def test_hysteresis_split_keeps_strong_cores_and_ignores_weak_bumps():
    r, c = _grid()
    rng = np.random.default_rng(2)
    labels = np.ones(r.size, dtype=np.int64)
    labels[c >= 30] = 3                                  # a second cluster, not split
    amp = 1.0 + 0.05 * rng.standard_normal(r.size)
    strong = (r - 10) ** 2 + (c - 10) ** 2 <= 16         # 49 pixels, far above the noise
    weak = (r - 30) ** 2 + (c - 12) ** 2 <= 16           # a bump that never reaches PEAK_Z
    amp[strong] += 1.0
    amp[weak] += 0.04
    amp[(r - 10) ** 2 + (c - 35) ** 2 <= 16] += 1.0      # strong, but in cluster 3
    z = core.amplitude_z(c, r, labels, amp, spacing=1.0)
    assert z[strong].max() >= core.PEAK_Z and z[weak].max() < core.PEAK_Z
    new, parent = core.split_cores(labels, [1], c, r, z, spacing=1.0, min_pixel=20)
    assert parent == {4: 1}
    got = new == 4
    # the core holds the disk and reaches at most the smoothing radius beyond it
    assert got[strong].all()
    assert not got[(r - 10) ** 2 + (c - 10) ** 2 > (4 + core.SMOOTH_SPACING + 0.5) ** 2].any()
    assert (new[weak] == 1).all() and (new[labels == 3] == 3).all()
    assert set(np.unique(new)) == {1, 3, 4}
    # same input -> same labels; too large a minimum -> no split at all
    again, _ = core.split_cores(labels, [1], c, r, z, spacing=1.0, min_pixel=20)
    np.testing.assert_array_equal(new, again)
    unchanged, none = core.split_cores(labels, [1], c, r, z, spacing=1.0, min_pixel=500)
    assert none == {} and np.array_equal(unchanged, labels)
    # a cluster that is all core keeps its id
    whole = np.where(strong, 5, labels)
    same, none = core.split_cores(whole, [5], c, r, z, spacing=1.0, min_pixel=20)
    assert none == {} and np.array_equal(same, whole)


def test_two_cores_of_one_cluster_are_numbered_in_pixel_order():
    r, c = _grid()
    labels = np.ones(r.size, dtype=np.int64)
    amp = np.ones(r.size) + 0.05 * np.random.default_rng(3).standard_normal(r.size)
    first = (r - 8) ** 2 + (c - 8) ** 2 <= 16
    second = (r - 30) ** 2 + (c - 30) ** 2 <= 16
    amp[first | second] += 1.0
    z = core.amplitude_z(c, r, labels, amp, spacing=1.0)
    new, parent = core.split_cores(labels, [1], c, r, z, spacing=1.0, min_pixel=20)
    assert parent == {2: 1, 3: 1}
    assert np.bincount(new[first]).argmax() == 2 and np.bincount(new[second]).argmax() == 3


def test_core_fraction_tells_one_loud_patch_from_scattered_loud_pixels():
    """Cluster 1: a disk of high amplitude (its pixels one patch); cluster 2: a band with one
    loud pixel in 64, isolated (pixels unwrapped wrong); cluster 3: no amplitude known;
    cluster 4: the quiet rest of the scene."""
    r, c = _grid(80)
    rng = np.random.default_rng(6)
    labels = np.full(r.size, 4, dtype=np.int64)
    disk = (r - 15) ** 2 + (c - 15) ** 2 <= 25
    labels[disk] = 1
    band = (r >= 40) & (r < 64)
    labels[band] = 2
    labels[(r >= 70) & (c >= 70)] = 3
    amp = 1.0 + 0.05 * rng.standard_normal(r.size)
    amp[disk] += 1.0
    loud = band & (r % 8 == 4) & (c % 8 == 4)
    amp[loud] += 20.0
    amp[labels == 3] = np.nan
    z = core.amplitude_z(c, r, labels, amp, spacing=1.0)
    assert z[loud].min() >= core.PEAK_Z
    share = core.core_fraction(c, r, labels, np.array([1, 2, 3, 4]), z, spacing=1.0)
    assert share[0] == 1.0
    # smoothing spreads each loud pixel over its neighbours (< 2.5 spacings), but the
    # patches stay apart: none holds most of cluster 2
    assert 0 < share[1] < 0.05
    assert np.isnan(share[2]) and share[3] < 0.05


def test_a_hotspot_needs_most_of_its_pixels_in_one_loud_patch():
    from hotspot.steps import dispersion_significance as sig
    table = {"standardDistance": np.full(3, 0.5), "numPixel": np.full(3, 500),
             "pValue": np.full(3, 1e-12), "signalRms": np.full(3, 0.01),
             "noiseLevel": np.full(3, 0.002), "coreFraction": np.array([0.9, 0.3, np.nan])}
    out = sig.select_hotspots(table, max_sd=1.0, min_pixel=20, alpha=0.05,
                              drop_insignificant=True)
    assert out["isHotspot"].tolist() == [True, False, True]
