"""Benchmarks behind ``recon bench``."""
