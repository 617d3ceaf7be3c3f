"""Unit tests of flowers."""
