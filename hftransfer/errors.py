"""Errors that carry a message a user can act on.

Entry points catch :class:`HFTransferError` and print its message as one line instead of a traceback,
so every raise site must name the file, line, field or key at fault.
"""

from __future__ import annotations


class HFTransferError(Exception):
    """Base class for errors caused by user input (config, data, paths) or the machine (a full disk), not by bugs."""


class ConfigError(HFTransferError, ValueError):
    """A config key or value is wrong; the message names the key."""


class DataError(HFTransferError, ValueError):
    """Input data is malformed; the message names the file and line (or row)."""


class AssetError(HFTransferError, FileNotFoundError):
    """An offline packaged asset (encoder or dataset) is not installed."""


class DiskFullError(HFTransferError):
    """A write failed for lack of disk space or quota; the message names what was being written, where, and what to
    do (see :func:`hftransfer.training.disk.writing`)."""


class RunDirInUseError(HFTransferError):
    """Another live run holds the run directory's lock; the message names its pid, host and start time."""
