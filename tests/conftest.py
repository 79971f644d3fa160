"""Shared test setup: this folder is on sys.path, so tests import helpers such as `golden_counts`."""
