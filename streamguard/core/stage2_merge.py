"""Stage 2's merge of a partial: every group checked first, then all of them merged.

A partial's groups are read and checked against the policy (:func:`check_groups`) before any
is merged (:func:`merge_groups`), and merging a checked group cannot fail. A partial with a
malformed group, header field or label therefore leaves stage 2 as it was, its stamp is not
recorded, and a redelivery (or a corrected copy) merges it whole, once. Partials come from
stage 1, but the partials topic is a Kafka topic anyone can write to, and workers of two
versions may share it.
"""

from collections import deque
from typing import Any, NamedTuple

from streamguard.core.environments import ENV_PAIR_STREAM, ENV_STREAMS, parse_cell
from streamguard.core.items import ITEMS_PREFIX, ItemRecord, ItemWindow, item_record
from streamguard.core.open_table import OpenTable
from streamguard.core.replicas import REPLICA_STREAM
from streamguard.core.slices import ROOT
from streamguard.core.stage1 import PAIR_STREAM
from streamguard.core.stage2_rows import arrays_of, env_rows, replica_rows, select_rows
from streamguard.core.stage2_state import (
    ARM_STREAMS,
    DeploymentState,
    ItemStreams,
    PartialError,
    Stage2Report,
    Stream,
    tracked_slices,
)

__all__ = ["Group", "ItemsGroup", "check_groups", "merge_groups"]


class Group(NamedTuple):
    """A summary group of a partial, checked (:func:`_check`)."""

    stream: str
    version: str
    window: int
    labels: list[str]
    arrays: dict[str, Any]
    baseline_version: str  # "" when the group names none


class ItemsGroup(NamedTuple):
    """An item-exposure group of a partial, checked (:func:`_check`)."""

    stream: str
    version: str
    window: int
    label: str
    record: ItemRecord


def check_groups(d: DeploymentState, groups: Any) -> list[Group | ItemsGroup]:
    """A partial's groups, each read and checked (:func:`_check`); nothing changes."""
    if not isinstance(groups, list):
        raise PartialError("a partial's groups are not a list")
    return [_check(d, group) for group in groups]


def merge_groups(
    d: DeploymentState, groups: list[Group | ItemsGroup], report: Stage2Report
) -> None:
    """Merge checked groups (merging a checked group cannot fail)."""
    for group in groups:
        if isinstance(group, ItemsGroup):
            _merge_items(d, group)
        else:
            _merge_group(d, group, report)


def _check(d: DeploymentState, group: dict[str, Any]) -> Group | ItemsGroup:
    """One group read and checked against the policy; nothing changes.

    Raises
    ------
    PartialError
        When the group does not fit the policy (other streams, shapes, precision).
    KeyError, TypeError, ValueError
        When the group is not a partial's group at all.
    """
    stream, version, window = str(group["stream"]), str(group["version"]), int(group["window"])
    if stream.startswith(ITEMS_PREFIX):
        if stream.removeprefix(ITEMS_PREFIX) not in {s.split(":", 1)[1] for s in ARM_STREAMS}:
            raise PartialError(f"unknown stream {stream!r}")
        raw = group.get("items")
        if not isinstance(raw, dict):
            raise PartialError(f"group of stream {stream!r} lacks its items")
        labels = group.get("slices") or [ROOT]
        if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
            raise PartialError(f"items group of stream {stream!r} names more than one slice")
        try:
            record = item_record(raw, d.policy.popularity.hll_precision)
        except (KeyError, TypeError, ValueError) as exc:
            raise PartialError(f"bad items in stream {stream!r}: {exc}") from None
        return ItemsGroup(stream, version, window, labels[0], record)
    fields = d.fields_of(stream)
    if not isinstance(group["slices"], list):
        raise PartialError(f"group of stream {stream!r}: slices are not a list")
    labels = [str(label) for label in group["slices"]]
    if len(set(labels)) != len(labels):
        raise PartialError(f"group of stream {stream!r} names a slice twice")
    if stream in ENV_STREAMS:
        try:
            deque(map(parse_cell, labels), maxlen=0)
        except ValueError as exc:
            raise PartialError(f"group of stream {stream!r}: {exc}") from None
    # Histograms and sketches stay cells up to the open window; replica and
    # environment rows are folded and capped on dense arrays (they are few).
    capped = stream == REPLICA_STREAM or stream in ENV_STREAMS
    arrays = arrays_of(fields, group["fields"], len(labels), sparse=not capped)
    baseline = str(group.get("baseline_version") or "")
    return Group(stream, version, window, labels, arrays, baseline)


def _merge_group(d: DeploymentState, group: Group, report: Stage2Report) -> None:
    stream, version, window, labels, arrays, baseline = group
    if d.last_closed is not None and window <= d.last_closed:
        if stream == PAIR_STREAM:
            report.late_at_merge += int(arrays["pairs"][0]) if labels else 0
        return
    fields = d.fields_of(stream)
    s = d.streams.get((stream, version))
    if s is None:
        s = d.streams[(stream, version)] = Stream(fields)
    if baseline:
        s.baseline_version = baseline
    # Windows before this one leave the horizon by the time the next window closes.
    oldest = -(2**62)
    if d.last_closed is not None:
        oldest = d.last_closed - d.policy.horizon_windows + 2
    if stream == REPLICA_STREAM:
        rows, arrays = replica_rows(s, labels, arrays, d.policy.cold_start.max_replicas, oldest)
    elif stream in ENV_STREAMS:
        rows, arrays = env_rows(
            s, labels, arrays, d.policy, oldest, paired=stream == ENV_PAIR_STREAM
        )
    else:
        rows = s.registry.rows_for(labels, limit=d.policy.slices.max_slices)
    keep = rows >= 0
    if not keep.all():
        report.capped_slices += int((~keep).sum())
        arrays = select_rows(fields, arrays, keep)
        rows = rows[keep]
    table = s.open.get(window)
    if table is None:
        table = s.open[window] = OpenTable(fields, capacity=max(16, len(s.registry)))
    table.add(rows, arrays)


def _merge_items(d: DeploymentState, group: ItemsGroup) -> None:
    stream, version, window, label, record = group
    if d.last_closed is not None and window <= d.last_closed:
        return
    settings = d.policy.popularity
    key = (stream, version, label)
    items = d.items.get(key)
    if items is None:
        if label != ROOT and tracked_slices(d) >= settings.max_slices:
            d.untracked_slices += 1
            return
        items = d.items[key] = ItemStreams()
    target = items.open.get(window)
    if target is None:
        capacity = settings.sketch_capacity if label == ROOT else settings.slice_sketch_capacity
        target = items.open[window] = ItemWindow(capacity, settings.hll_precision)
    target.add(record)
