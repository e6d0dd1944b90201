"""Experiment and report tooling built on the library: `bench` (the official code and ours,
side by side) and `compare` (several families trained on one budget, with a Markdown report).

Nothing in the model, ops or train packages imports from here.
"""
