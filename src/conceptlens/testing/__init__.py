"""Helpers for conceptlens's tests (shipped so that no test module imports another)."""
