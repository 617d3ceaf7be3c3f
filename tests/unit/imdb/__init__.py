"""Unit tests of imdb."""
