"""Kernels behind one interface. Each fast path has a plain PyTorch twin it is tested against."""
