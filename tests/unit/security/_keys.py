"""Keys, times and a command shared by the signing tests."""

from dataclasses import dataclass

from streamguard.contracts import Command
from streamguard.security import KeyRing, SigningKey

NOW = 1_790_000_300.0
TTL = 300.0
SKEW = 30.0


@dataclass(frozen=True)
class Keys:
    """The worker's current key, its previous key (rotation) and an attacker's key."""

    current: SigningKey
    previous: SigningKey
    attacker: SigningKey

    @property
    def ring(self) -> KeyRing:
        return KeyRing([self.previous.verifying_key(), self.current.verifying_key()])


def make_command(deployment: str = "home-ranker", ts: float = NOW - 10) -> Command:
    evidence = {
        "statistic": "flip_rate",
        "value": 0.0506,
        "threshold": 0.05,
        "n": 7706,
        "window": {"start": ts - 10, "end": ts},
    }
    return Command(
        "pause", deployment, "ranker-v42", "shadow", {"platform": "android"}, evidence, ts
    )
