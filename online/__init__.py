"""The online data loop for qm9_et: shards arrive, DVC versions them, a trigger retrains, and the
new version is hot-swapped on the running TorchServe unless the safety gate stops it.

Commands: `python -m online {init,arrive,step,watch,status,reconcile,restore}` (see __main__.py).
"""
