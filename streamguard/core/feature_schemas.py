"""Which request (feature) schemas each model version served, and how often it failed.

Prediction events may carry ``feature_schema``, the version of the request schema serving sent
to the model. Stage 1 counts, per (model version, window), the predictions and the errors of
each schema on the ``schema`` stream, whose rows are labelled ``feature_schema=<version>``
instead of slices. Stage 2 merges them like any other stream, and the compatibility guard
(:mod:`streamguard.guards.compat`) keeps the totals that tell whether a rollback target has
ever served the live schema without errors.

Examples
--------
>>> import numpy as np
>>> labels, arrays = schema_counts(
...     np.array([0, 1, 1, 0, 1]), np.array([False, True, False, False, False]), ["1", "2"]
... )
>>> labels, arrays["events"].tolist(), arrays["errors"].tolist()
(['feature_schema=1', 'feature_schema=2'], [2, 3], [0, 1])
"""

import numpy as np
import numpy.typing as npt

from streamguard.core.summary import Array, Field

__all__ = ["SCHEMA_FIELDS", "SCHEMA_LABEL", "SCHEMA_STREAM", "schema_counts", "schema_of"]

SCHEMA_STREAM = "schema"
SCHEMA_LABEL = "feature_schema="
SCHEMA_FIELDS = (Field("events", "count"), Field("errors", "count"))


def schema_counts(
    codes: npt.NDArray[np.int64], errors: npt.NDArray[np.bool_], names: list[str]
) -> tuple[list[str], dict[str, Array]]:
    """Predictions and errors per schema, for the schemas present.

    Parameters
    ----------
    codes
        Index into ``names`` of each event's schema.
    errors
        Whether serving failed for each event.
    names
        Schema versions; ``""`` stands for events without one and is never counted.
    """
    events = np.bincount(codes, minlength=len(names))
    failed = np.bincount(codes[errors], minlength=len(names))
    present = [i for i in np.flatnonzero(events).tolist() if names[i]]
    labels = [SCHEMA_LABEL + names[i] for i in present]
    at = np.asarray(present, dtype=np.int64)
    return labels, {"events": events[at].astype(np.int64), "errors": failed[at].astype(np.int64)}


def schema_of(label: str) -> str:
    """The schema version of a ``schema`` stream row label."""
    return label.removeprefix(SCHEMA_LABEL)
