"""Baseline model families compared against BDH (registered in `bdh.registry`)."""
