"""Error hierarchy of mfgnn.

Every error a user can cause with bad input derives from :class:`MfgnnError`, so the
command line can print the message (which names the file, row and field) without a
traceback, and library users can catch one class.
"""

from __future__ import annotations


class MfgnnError(Exception):
    """Base class of all errors caused by user input or user files."""


class DataError(MfgnnError):
    """A dataset file or dataset spec is wrong: bad geometry, label, unit, key or shape."""


class ConfigError(MfgnnError):
    """A configuration file or option is wrong (unknown key, bad value)."""


class ModelError(MfgnnError):
    """A model cannot be built, loaded, or applied to the given input."""


class CheckpointError(MfgnnError):
    """A checkpoint or model file is missing, corrupt or of an incompatible version."""
