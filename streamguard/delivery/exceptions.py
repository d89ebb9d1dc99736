"""Errors of the alert relay."""

from streamguard.exceptions import StreamguardError

__all__ = ["AlertDecodeError", "DeliveryError", "RelayError"]


class DeliveryError(StreamguardError):
    """Base class of the delivery package's errors."""


class AlertDecodeError(DeliveryError):
    """A message on the alerts topic that is not an alert; it is counted and skipped.

    Parameters
    ----------
    reason
        Short machine-readable reason (``invalid_json``, ``missing_field``, ...), the key of
        the relay's ``invalid`` counter.
    detail
        One plain line for the log.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RelayError(DeliveryError):
    """The relay cannot run (for instance, the broker is unreachable at start)."""
