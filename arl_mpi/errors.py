"""Exception types whose message is the one-line error shown to users."""

from __future__ import annotations


class ArlError(Exception):
    """Base of all errors reported to the user as one line (no traceback)."""


class InputError(ArlError, ValueError):
    """Bad input data or a bad path: the message names the file/field."""


class StoreError(InputError):
    """A visibility store is missing, incomplete, corrupt or of an unknown schema."""


class ConfigError(ArlError, ValueError):
    """Invalid settings (command-line flags or a config file)."""


class OutputError(ArlError, OSError):
    """An output could not be written (disk full, quota exceeded): the message names the file."""


class ClusterError(ArlError, RuntimeError):
    """The Dask/MPI runtime could not be started, reached, or lost its workers."""
