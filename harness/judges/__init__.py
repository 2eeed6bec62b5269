"""Judges: LLM judges over any backend, programmatic checks, verdict parsing."""
