"""Example experiment specs, one per test type; shipped in the wheel as ``loopexp.experiments``."""
