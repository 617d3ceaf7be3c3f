"""`make profile` (`python -m benchmarks.profile`): Locust sweeps per model and server setting.

settings  the server settings swept      locust   one Locust run and its output
metrics   TorchServe's side of a run      run      the sweep, profile.json, the command line
goals     verdicts P1-P3, the time split  report   report.md;  plots  its PNGs
"""
