"""Tooling around the workflow, not a step: simulated scenes with known hotspots and their scorer.

Used by the tests, hotspot_demo.py, hotspot_simulate.py, hotspot_score.py and the benchmarks.
  scene.py   simulate_scene: a geocoded MintPy scene (+ WabInSAR export) and hotspotTruth.h5
  score.py   score_labels / score_files: a label map against the truth
"""
from hotspot.simulation.scene import Scene, simulate_scene
from hotspot.simulation.score import format_score, score_files, score_labels
from hotspot.simulation.truth import read_truth, truth_summary, write_truth

__all__ = ["Scene", "format_score", "read_truth", "score_files", "score_labels", "simulate_scene",
           "truth_summary", "write_truth"]
