"""Unwrapping-error signature (hotspot.steps.unwrap_check) on hand-made clusters."""
import numpy as np

from hotspot.steps import unwrap_check as uc

HALF = 0.05546576 / 2      # Sentinel-1 half wavelength, m
T = 120


def box(start, stop, t=T):
    b = np.zeros(t)
    b[start:stop] = 1.0
    return b


def test_best_box_finds_interval_and_amplitude():
    rng = np.random.default_rng(0)
    x = 0.02 * box(40, 90) + rng.normal(0, 0.002, T)
    start, stop, amp = uc.best_box(x[None, :])
    assert (start[0], stop[0]) == (40, 90)
    assert abs(amp[0] - 0.02) < 0.002
    # a step to the end is a box that stops at T
    start, stop, _ = uc.best_box((0.03 * box(70, T) + rng.normal(0, 0.002, T))[None, :])
    assert (start[0], stop[0]) == (70, T)


def test_best_box_of_nan_row_is_empty():
    x = np.zeros((2, T))
    x[1, 5] = np.nan
    start, stop, _ = uc.best_box(x)
    assert stop[1] == start[1] == 0


def test_patch_of_one_quantum_is_flagged_and_corrected_away():
    rng = np.random.default_rng(1)
    n_patch, n_halo = 40, 30
    jump = -2 * HALF * box(55, T)
    rows = np.vstack([jump + rng.normal(0, 0.003, (n_patch, T)),
                      rng.normal(0, 0.003, (n_halo, T))])
    contrast = rows.mean(axis=0)
    sig = uc.signature(rows, contrast, HALF)
    assert sig["is_quantised"]
    assert (sig["start"], sig["stop"]) == (55, T)
    assert abs(sig["fraction"] - n_patch / (n_patch + n_halo)) < 0.05
    # what is left after removing the quantised jump is noise
    assert np.std(sig["corrected"]) < 0.002 < np.std(contrast)


def test_deformation_bowl_step_is_not_quantised():
    """A step of a bowl moves its pixels by a continuum of amounts, not by one quantum."""
    rng = np.random.default_rng(2)
    depth = np.linspace(0.05, 1.0, 80) * -0.045     # bowl profile: 2 to 45 mm
    rows = depth[:, None] * box(54, T)[None, :] + rng.normal(0, 0.003, (80, T))
    sig = uc.signature(rows, rows.mean(axis=0), HALF)
    assert not sig["is_quantised"]
    assert sig["residual"] > uc.MAX_RESIDUAL * HALF


def test_uniform_step_off_the_quantum_is_not_quantised():
    rng = np.random.default_rng(3)
    rows = -0.015 * box(54, T)[None, :] + rng.normal(0, 0.002, (60, T))  # 15 mm < lambda / 4
    assert not uc.signature(rows, rows.mean(axis=0), HALF)["is_quantised"]
    rows = -0.040 * box(54, T)[None, :] + rng.normal(0, 0.002, (60, T))  # 40 mm: 12 mm off
    assert not uc.signature(rows, rows.mean(axis=0), HALF)["is_quantised"]


def test_unknown_wavelength_disables_the_test():
    rows = -HALF * np.tile(box(10, T), (20, 1))
    for half in (None, 0.0, float("nan")):
        assert not uc.signature(rows, rows.mean(axis=0), half)["is_quantised"]


def test_patch_unwrapped_wrong_twice_is_corrected_away():
    """Family seed 2: a patch +2 quanta over epochs 45-100 and -1 quantum from 110 on; one box
    removed left the other, significant (docs/quality.md)."""
    rng = np.random.default_rng(4)
    n_patch, n_halo = 50, 15
    jumps = 2 * HALF * box(45, 100) - HALF * box(110, T)
    rows = np.vstack([jumps + rng.normal(0, 0.003, (n_patch, T)),
                      rng.normal(0, 0.003, (n_halo, T))])
    contrast = rows.mean(axis=0)
    sig = uc.signature(rows, contrast, HALF)
    assert sig["is_quantised"] and sig["num_box"] == 2
    assert (sig["start"], sig["stop"]) == (45, 100)
    assert np.std(sig["corrected"]) < 0.002 < np.std(contrast)


def test_bowl_after_a_quantised_box_keeps_its_signal():
    """A real subsidence on top of one unwrapping error: only the quantised box goes."""
    rng = np.random.default_rng(5)
    trend = -np.linspace(0, 0.03, T)                       # 30 mm of subsidence
    depth = np.linspace(0.3, 1.0, 60)[:, None]
    rows = depth * trend[None, :] + HALF * box(30, 60)[None, :] + rng.normal(0, 0.003, (60, T))
    sig = uc.signature(rows, rows.mean(axis=0), HALF)
    assert sig["is_quantised"] and sig["num_box"] >= 1
    fit = np.polyfit(np.arange(T), sig["corrected"], 1)[0] * (T - 1)
    assert abs(fit - depth.mean() * -0.03) < 0.004


def test_patch_unwrapped_wrong_inside_another_interval_is_corrected_away():
    """Family seed 5: -1 quantum over epochs 84-143 and -1 more over 113-138; the best single
    box carries ~1.4 quanta per pixel, between two quanta; the pair fitted together is
    quantised."""
    rng = np.random.default_rng(6)
    t = 150
    jumps = -HALF * box(84, 143, t) - HALF * box(113, 138, t)
    rows = np.vstack([jumps + rng.normal(0, 0.004, (25, t)), rng.normal(0, 0.004, (4, t))])
    contrast = rows.mean(axis=0)
    single = uc._quantised_box(rows, contrast, HALF)
    assert not single["is_quantised"]
    sig = uc.signature(rows, contrast, HALF)
    assert sig["is_quantised"] and sig["num_box"] == 2
    assert np.std(sig["corrected"]) < 0.002 < np.std(contrast)


def test_nested_bowl_steps_are_not_quantised():
    """Two steps of a deformation bowl (a continuum of depths) stay a signal."""
    rng = np.random.default_rng(7)
    t = 150
    depth = np.linspace(0.1, 1.0, 60)[:, None]
    rows = (depth * (-0.03 * box(84, 143, t) - 0.025 * box(113, 138, t))[None, :]
            + rng.normal(0, 0.003, (60, t)))
    assert not uc.signature(rows, rows.mean(axis=0), HALF)["is_quantised"]
