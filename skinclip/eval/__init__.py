"""Benchmark evaluation: inputs, metrics, calibration, probe, concepts and reports."""
