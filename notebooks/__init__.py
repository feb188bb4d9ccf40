"""The notebooks that present loopexp's work; shipped in the wheel as ``loopexp.notebooks``."""
