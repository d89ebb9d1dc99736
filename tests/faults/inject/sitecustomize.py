"""Fault injection for the fault tests: a worker (or replay) whose stage 1 raises.

With this folder on ``PYTHONPATH``, Python imports this module at start-up. In a
``streamguard worker`` or ``replay`` process with ``STREAMGUARD_TEST_RAISE_IN=feed:N`` the Nth
call of ``Stage1._predictions`` (one deployment's predictions of one message) raises, after the
message's counts were partly taken; with ``flush:N`` the Nth flush of a partition that holds
groups raises, after taking them (``test_internal_error.py``). With ``event:ID`` every call of
``Stage1._predictions`` whose predictions hold the event id ``ID`` raises, after part of it was
counted: a bug that one message's content triggers, in every process that reads it
(``test_quarantine.py``). With ``guard:NAME`` the guard named NAME raises at every window
close, after judging and after adding a key to its state (``test_guard_failure.py``: the
worker's plumbing; that stage 2 puts the state back is shown by the unit tests). Any other
process is left alone.
"""

import os
import sys

_WHERE = os.environ.get("STREAMGUARD_TEST_RAISE_IN", "")

if _WHERE and ("worker" in sys.argv or "replay" in sys.argv):
    from typing import Any

    import streamguard.core.stage1 as _stage1

    _point, _, _n = _WHERE.partition(":")
    _calls = [0]

    def _due() -> bool:
        _calls[0] += 1
        return _calls[0] == int(_n)

    if _point == "feed":
        _predictions = _stage1.Stage1._predictions

        def _failing_predictions(self: Any, *args: Any, **kwargs: Any) -> None:
            if _due():
                raise RuntimeError(f"injected: {_WHERE}")
            _predictions(self, *args, **kwargs)

        _stage1.Stage1._predictions = _failing_predictions  # type: ignore[method-assign]
    elif _point == "event":
        _predictions = _stage1.Stage1._predictions

        def _poisoned_predictions(self: Any, source: Any, state: Any, batch: Any, *a: Any) -> None:
            _predictions(self, source, state, batch, *a)
            if _n in batch.event_id:  # after counting: the state is half-changed
                raise RuntimeError(f"injected: {_WHERE}")

        _stage1.Stage1._predictions = _poisoned_predictions  # type: ignore[method-assign]
    elif _point == "flush":
        _encode = _stage1.encode_partials

        def _failing_encode(source: Any, max_bytes: int) -> list[tuple[str, bytes]]:
            if source.groups and _due():
                source.groups.clear()  # taken, as a flush that raised half-way leaves it
                raise RuntimeError(f"injected: {_WHERE}")
            return _encode(source, max_bytes)

        _stage1.encode_partials = _failing_encode
    elif _point == "guard":
        import streamguard.guards.registry as _registry

        _guard = next(
            g
            for g in vars(_registry).values()
            if isinstance(g, type) and getattr(g, "name", None) == _n
        )
        _evaluate = _guard.evaluate

        def _failing_guard(self: Any, ctx: Any) -> Any:
            _evaluate(self, ctx)
            ctx.state(self.name)["injected"] = ctx.window  # a change stage 2 must undo
            raise RuntimeError(f"injected: {_WHERE}")

        _guard.evaluate = _failing_guard
