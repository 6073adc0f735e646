"""Hostile pipeline modules and the helpers the runner/sandbox tests share (kit.py)."""
