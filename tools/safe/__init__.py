"""SAFE detector dev tools (not shipped in the Truss): synthetic data, training, evaluation,
dataset runner.

Run from the repository root with the shared package on the path, so the tools use the same
detector code the Truss serves: `PYTHONPATH=shared .venv/bin/python -m tools.safe.<tool>` (pytest
gets both roots from pyproject's `pythonpath`).
"""
