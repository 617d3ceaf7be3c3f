"""Unit tests of qm9."""
