"""Fuzzing the served models with generated malformed requests (`make fuzz`, issue 13)."""
