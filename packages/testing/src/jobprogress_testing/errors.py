"""What goes wrong starting the local processes."""

from __future__ import annotations

__all__ = ["StackError"]


class StackError(RuntimeError):
    """A process did not start or did not become ready; the message quotes its log."""
