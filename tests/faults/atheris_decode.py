"""Coverage-guided fuzzing of the decoder with atheris (libFuzzer); run by ``test_fuzz.py``.

    python tests/faults/atheris_decode.py -runs=100000 CORPUS_DIR

Every input is one Kafka message value. The decoder must never raise, and its bookkeeping
must hold: each rejection has a known reason and a detail, and every event found is either
kept or dead-lettered. A failed check raises, which atheris reports as a crash (non-zero exit).
"""

import sys

import atheris

with atheris.instrument_imports():
    from streamguard.contracts.decode import REASONS, decode_message


def one(data: bytes) -> None:
    """Decode ``data``; raise if the result breaks the decoder's contract."""
    decoded = decode_message(data, max_ts=2_000_000_000.0)
    kept = len(decoded.predictions) + len(decoded.outcomes) + len(decoded.training)
    for rejected in decoded.rejected:
        if rejected.reason not in REASONS or not rejected.detail:
            raise AssertionError(f"bad rejection {rejected.reason!r}: {rejected.detail!r}")
    whole = [r for r in decoded.rejected if r.event_index is None]
    if whole:  # a message rejected whole keeps nothing
        if kept or len(decoded.rejected) != 1:
            raise AssertionError(f"whole-message rejection with {kept} kept")
    elif kept + len(decoded.rejected) != decoded.n_events:
        raise AssertionError(f"{decoded.n_events} events, {kept} kept, {len(decoded.rejected)} out")


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
