"""The exception every problem with the data raises: :class:`DataError`, a ``ValueError`` with
a one-line message that names the problem and its fix.
"""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the data, with a one-line message naming it and its fix."""
