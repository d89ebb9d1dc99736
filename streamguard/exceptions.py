"""Errors shared by every streamguard package."""

__all__ = ["ConfigError", "StreamguardError"]


class StreamguardError(Exception):
    """Base class of every error streamguard raises on purpose."""


class ConfigError(StreamguardError):
    """A configuration value (policy file, settings, CLI argument) is invalid.

    The message is one plain line that names the offending value; the CLI prints it as is.
    """
