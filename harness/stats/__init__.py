"""Paired statistics over verdict tables: pure functions, scipy where it has the test."""
