"""Name the smallest slice that explains a finding.

Slices form a lattice (``*`` > ``platform=android`` > ``platform=android,tier=free``). A deviation
confined to Android free-tier users makes ``platform=android``, ``tier=free`` and perhaps ``*``
breach too, diluted. Starting from each breaching slice with no breaching ancestor, we descend:
a slice S is *explained by* its breaching children F along some extra dimensions when S without
F (the complement, computed by subtracting summaries) is *clean*: it has enough data to be
judged and is clearly healthy. We descend into F; when no such split exists, S itself is the
explanation. A complement that is empty or too small proves nothing, so a deviation spread over
all of S (every child breaches) is reported as S, not as its children.

Examples
--------
>>> labels = ["*", "p=a", "p=b", "p=a,t=f", "p=a,t=g", "p=b,t=f", "t=f", "t=g"]
>>> firing = {"*", "p=a", "p=a,t=f", "t=f"}
>>> def complement_is_clean(parent, children):
...     return True  # what is left of the parent without these children is healthy here
>>> explain(labels, firing, complement_is_clean)
['p=a,t=f']
"""

from collections.abc import Callable

from streamguard.core.slices import ROOT

__all__ = ["explain"]


def _items(label: str) -> frozenset[str]:
    return frozenset() if label == ROOT else frozenset(label.split(","))


def _dims(items: frozenset[str]) -> frozenset[str]:
    return frozenset(item.split("=", 1)[0] for item in items)


def explain(
    labels: list[str],
    firing: set[str],
    complement_is_clean: Callable[[str, list[str]], bool],
) -> list[str]:
    """Explanatory slices among ``firing``.

    Parameters
    ----------
    labels
        All tracked slice labels with data.
    firing
        Labels whose own statistics breach a threshold.
    complement_is_clean
        ``complement_is_clean(parent, children)`` tells whether ``parent`` minus ``children`` has
        enough data to be judged and is clearly healthy.
    """
    items = {label: _items(label) for label in labels}
    firing_items = {label: items[label] for label in firing if label in items}
    roots = [
        label
        for label, own in firing_items.items()
        if not any(other < own for other in firing_items.values())
    ]
    found: set[str] = set()
    seen: set[str] = set()

    def descend(label: str) -> None:
        if label in seen:
            return
        seen.add(label)
        own = items[label]
        own_dims = _dims(own)
        groups: dict[frozenset[str], list[str]] = {}
        for child, child_items in firing_items.items():
            if own < child_items:
                extra = _dims(child_items) - own_dims
                groups.setdefault(extra, []).append(child)
        candidates = []
        for extra, members in groups.items():
            # Children that differ from the parent by exactly these dimensions split it.
            children = sorted(members)
            if complement_is_clean(label, children):
                candidates.append((len(extra), len(children), children))
        if not candidates:
            found.add(label)
            return
        candidates.sort()
        for child in candidates[0][2]:
            descend(child)

    for root in sorted(roots):
        descend(root)
    # A slice whose descendant is also an explanation adds nothing.
    result = [label for label in found if not any(items[label] < items[other] for other in found)]
    return sorted(result, key=lambda label: (len(items[label]), label))
