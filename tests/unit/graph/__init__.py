"""Unit tests of graph."""
