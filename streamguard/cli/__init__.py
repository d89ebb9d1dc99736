"""The ``streamguard`` command."""
