"""Stage 1's partial messages: a source partition's groups encoded for stage 2."""

import math
from collections import defaultdict

from streamguard.core.items import count_items
from streamguard.core.partials import HEADER_RESERVE, dumps, encode_group, pack
from streamguard.core.slices import ROOT
from streamguard.core.stage1_state import Source, settle

__all__ = ["encode_partials"]


def encode_partials(source: Source, max_bytes: int) -> list[tuple[str, bytes]]:
    """The partial messages ``(deployment, value)`` of everything ``source`` accounted since
    its last flush, each at most ``max_bytes``; clears its groups and records the boundary.

    Groups are encoded in key order, so the same accounting always gives the same bytes (a
    replay after a restore must reproduce them: stage 2 deduplicates by stamp).
    """
    partition = source.partition
    if source.offset_hi <= source.offset_lo:
        return []
    by_deployment: dict[str, list[bytes]] = defaultdict(list)
    # One group at a time: settled just before it is encoded, and let go right after. Settling
    # builds a group's table from its collected events; settling every group first held all
    # the tables at once, and a flush after a backlog (hundreds of groups at 10,000 slices)
    # took ~450 MB more for a second (tracemalloc in the worker, 2026-11-25). Should settling
    # or encoding raise (a bug, or MemoryError), the groups taken so far are gone from this
    # state: the worker then stops at once and its successor replays from the last snapshot
    # (streamguard.faust_app.halt); replay and the tests let the exception propagate.
    for key in sorted(source.groups):
        group = source.groups.pop(key)
        deployment, stream, version, window = key
        settle(group, source.deployments[deployment])
        n = len(group.registry)
        header = {
            "window": window,
            "stream": stream,
            "version": version,
            "baseline_version": group.baseline_version,
        }
        by_deployment[deployment].extend(
            encode_group(
                header,
                group.registry.labels,
                {k: v[:n] for k, v in group.table.arrays.items()},
                max_bytes // 2,
            )
        )
    for (deployment, stream, version, window, label), ids in sorted(source.items.items()):
        settings = source.deployments[deployment].policy.popularity
        top_k = settings.flush_top_k if label == ROOT else settings.slice_flush_top_k
        record = count_items(ids, top_k, settings.hll_precision)
        # An items group names the slice it counts; none means the whole deployment.
        header = {
            "window": window,
            "stream": stream,
            "version": version,
            "baseline_version": "",
            "slices": [] if label == ROOT else [label],
            "fields": {},
        }
        by_deployment[deployment].append(dumps({**header, "items": record}))
    out: list[tuple[str, bytes]] = []
    watermark = None if source.watermark == -math.inf else source.watermark
    for name, state in sorted(source.deployments.items()):
        if not (state.touched or name in by_deployment):
            continue
        # Leave room for the message header around the groups.
        parts = pack(by_deployment.get(name, []), max_bytes - HEADER_RESERVE)
        for index, groups in enumerate(parts):
            head = dumps(
                {
                    "schema_version": 1,
                    "kind": "partial",
                    "deployment": name,
                    "source": {
                        "partition": partition,
                        "offset_lo": source.offset_lo,
                        "offset_hi": source.offset_hi,
                        "part": index,
                        "parts": len(parts),
                    },
                    "watermark": watermark,
                    "late": state.late if index == 0 else 0,
                }
            )
            out.append((name, head[:-1] + b',"groups":[' + b",".join(groups) + b"]}"))
        state.late = 0
        state.touched = False
    source.items.clear()
    source.unflushed = 0
    source.offset_lo = source.offset_hi
    source.flushed_watermark = source.watermark
    source.flushed_offset = source.offset_hi
    # Recorded even when nothing went out: the units processed up to here end here, and a
    # replay must cut its runs of one-event messages at the same offsets.
    source.boundaries.append(source.offset_hi)
    return out
