"""streamguard: a stream-processing guard for live model rollouts.

The package is laid out along the architecture:

- :mod:`streamguard.contracts` -- message kinds, topic specs, decoding (pure).
- :mod:`streamguard.stats` -- mergeable statistics on numpy arrays (pure).
- :mod:`streamguard.core` -- slices, summaries, pairing, windows, the staged engine (pure).
- :mod:`streamguard.guards` -- guards that turn summaries into findings (pure).
- :mod:`streamguard.decisions` -- the decision policy that turns findings into commands (pure).
- :mod:`streamguard.policy` -- the TOML policy file (pure).
- :mod:`streamguard.faust_app` -- the Faust adapter (``create_app``).
- :mod:`streamguard.broker` -- the embedded broker and topic administration.
- :mod:`streamguard.client` -- what serving fleets import: emitter and control subscriber.
- :mod:`streamguard.cli` -- the ``streamguard`` command.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
