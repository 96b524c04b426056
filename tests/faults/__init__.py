"""Fault scenarios under load, the soak, and their figures (docs/reliability.md).

`python -m tests.faults --help` runs the long version; `tests/faults/test_scenarios.py` is the
pytest entry point (fast part in the default run, repetitions and soak under `-m slow`).
"""
