"""Shared library of the jobprogress services."""

__version__ = "0.1.0"
