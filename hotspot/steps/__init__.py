"""The workflow: one module per step (run / inputs / outputs, see hotspot.hotspotApp), in order

  load_data -> covariogram -> tskm -> dbscan -> train_lstm -> predict -> dispersion -> plot

and beside them the helpers of the steps: tskm_*.py (tskm), train_lstm_sample.py and
lstm_*.py (train_lstm, predict), dispersion_*.py, unwrap_check.py and amplitude_core.py
(dispersion), export.py (plot), kernels/ (every numba kernel: tskm, covariogram).
docs/architecture.md lists every module and the files the steps exchange.
"""
