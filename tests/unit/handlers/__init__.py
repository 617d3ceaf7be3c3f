"""Unit tests of handlers."""
