"""Errors of the contracts package."""

from streamguard.exceptions import StreamguardError

__all__ = ["ContractError", "DecodeError"]


class ContractError(StreamguardError):
    """The contract files under ``topics/`` are missing or inconsistent."""


class DecodeError(StreamguardError):
    """A message or event does not meet its contract.

    Parameters
    ----------
    reason
        A short machine-readable reason (``invalid_json``, ``missing_field``, ...) used as the
        dead-letter key and as a metric label, so its set of values stays small.
    detail
        A human-readable explanation naming the field and the offending value.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
