"""Client library for serving fleets: emit events, receive control commands.

* :class:`Emitter` batches prediction and outcome events into envelopes, routed so both halves
  of a request share a partition; bounded buffer, bounded retries, every loss counted.
* :class:`ControlSubscriber` hands each command to a handler at least once, once per process
  (deduplicated by command_id), in order per deployment, committing only after success.
* :func:`read_commands` reads the whole control topic without a group (tests, demo, tooling).
"""

from streamguard.client.emitter import ENVELOPE_OVERHEAD, Emitter, EmitterError
from streamguard.client.reader import read_commands
from streamguard.client.subscriber import ControlSubscriber, Handler
from streamguard.client.validate import parse_command, validate_command
from streamguard.client.verification import Verifier, accept_all

__all__ = [
    "ENVELOPE_OVERHEAD",
    "ControlSubscriber",
    "Emitter",
    "EmitterError",
    "Handler",
    "Verifier",
    "accept_all",
    "parse_command",
    "read_commands",
    "validate_command",
]
