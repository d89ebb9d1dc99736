"""Errors of the security package."""

from streamguard.exceptions import ConfigError, StreamguardError

__all__ = ["CanonicalError", "KeyFileError"]


class CanonicalError(StreamguardError):
    """A value cannot be written in the canonical encoding (NaN, a non-string key, ...).

    The message is one plain line naming the offending value and where it sits.
    """


class KeyFileError(ConfigError):
    """A key or keyring file is missing, unreadable or inconsistent.

    The message is one plain line naming the file and the problem, so the CLI and the worker
    can print it as is.
    """
