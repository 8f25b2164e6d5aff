"""The workflow: one module per step (run / inputs / outputs, see hotspot.hotspotApp), in order

  load_data -> covariogram -> tskm -> dbscan -> train_lstm -> predict -> dispersion -> plot

and beside them the helpers of one step, named after it (dispersion_*.py, tskm_*.py,
train_lstm_*.py, ...).  docs/architecture.md lists every module and the files they exchange.
"""
