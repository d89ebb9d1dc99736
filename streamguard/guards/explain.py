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
>>> def rest(parent, children):
...     return "clean"  # what is left of the parent without these children is healthy here
>>> explain(labels, firing, rest)
['p=a,t=f']
"""

from collections.abc import Callable
from typing import Literal

from streamguard.core.slices import ROOT

__all__ = ["Rest", "Rests", "explain"]

#: What is left of a slice once some of its sub-slices are removed: ``clean`` (enough data and
#: clearly healthy), ``elevated`` (enough data, not clearly healthy) or ``unknown`` (too little).
Rest = Literal["clean", "elevated", "unknown"]
#: Many ``rest(parent, children)`` questions answered at once, in order.
Rests = Callable[[list[tuple[str, list[str]]]], list[Rest]]


def _items(label: str) -> frozenset[str]:
    return frozenset() if label == ROOT else frozenset(label.split(","))


def _dims(items: frozenset[str]) -> frozenset[str]:
    return frozenset(item.split("=", 1)[0] for item in items)


def _intersection(a: frozenset[str], b: frozenset[str]) -> frozenset[str] | None:
    """Items of the slice where both ``a`` and ``b`` hold, or None if they exclude each other."""
    merged: dict[str, str] = {}
    for item in a | b:
        dim, _, value = item.partition("=")
        if merged.setdefault(dim, value) != value:
            return None
    return a | b


def explain(
    labels: list[str],
    firing: set[str],
    rest: Callable[[str, list[str]], Rest],
    strength: dict[str, float] | None = None,
    rests: Rests | None = None,
) -> list[str]:
    """Explanatory slices among ``firing``.

    Parameters
    ----------
    labels
        All tracked slice labels with data.
    firing
        Labels whose own statistics breach a threshold.
    rest
        ``rest(parent, children)`` judges ``parent`` minus ``children`` (its descendants).
    strength
        How strongly each firing label breaches; the strongest breaches are explained first.
    rests
        Optional: the same judgement as ``rest`` for many questions at once. The questions of
        one step (every split of a slice; every ancestor of a candidate) are asked together,
        so a guard that judges in arrays pays its per-call cost once per step, not once per
        question (the shadow guard's close at 20 deployments was mostly this; README,
        "Benchmarks"). The answers must be ``rest``'s.

    Notes
    -----
    Breaches overlap: a deviation in ``region=eu`` also makes ``platform=web`` breach, diluted,
    through ``platform=web,region=eu``. Explanations are accepted strongest first, and a later
    candidate is dropped when it lies inside an accepted explanation, or when removing its
    overlap with one leaves it clean: its breach is that explanation's, seen from another side.

    Breaches also arrive unevenly: while a deviation in ``platform=android`` builds up, one of its
    small sub-slices may cross its threshold a window before the whole platform does. So an
    explanation is *confirmed* only if, for every tracked ancestor, what is left of the ancestor
    without the explanations inside it is not elevated; otherwise the deviation reaches beyond
    the candidate and the finding waits until the broader slice breaches.
    """
    ask: Rests = rests or (lambda questions: [rest(p, c) for p, c in questions])
    items = {label: _items(label) for label in labels}
    by_items = {own: label for label, own in items.items()}
    firing_items = {label: items[label] for label in firing if label in items}
    strength = strength or {}
    roots = [
        label
        for label, own in firing_items.items()
        if not any(other < own for other in firing_items.values())
    ]

    def descend(root: str, out: list[str], seen: set[str]) -> None:
        # Depth first with an explicit stack, not a recursive closure: a nested function that
        # calls itself is a reference cycle, which kept ``ask`` (and through it a guard's
        # arrays for every slice) alive until the garbage collector's next full pass.
        stack = [root]
        while stack:
            label = stack.pop()
            if label in seen:
                continue
            seen.add(label)
            own = items[label]
            own_dims = _dims(own)
            groups: dict[frozenset[str], list[str]] = {}
            for child, child_items in firing_items.items():
                if own < child_items:
                    extra = _dims(child_items) - own_dims
                    groups.setdefault(extra, []).append(child)
            # Children that differ from the parent by exactly these dimensions split it.
            splits = [(extra, sorted(members)) for extra, members in groups.items()]
            answers = ask([(label, children) for _, children in splits]) if splits else []
            candidates = [
                (len(extra), len(children), children)
                for (extra, children), answer in zip(splits, answers, strict=True)
                if answer == "clean"
            ]
            if not candidates:
                out.append(label)
                continue
            candidates.sort()
            stack.extend(reversed(candidates[0][2]))  # the first child is taken next

    def explained_by(candidate: str, accepted: str) -> bool:
        own, other = items[candidate], items[accepted]
        if other <= own:
            return True  # inside an accepted explanation
        overlap = _intersection(own, other)
        if overlap is None or overlap == own or overlap not in by_items:
            return False
        return ask([(candidate, [by_items[overlap]])]) == ["clean"]

    accepted: list[str] = []
    seen: set[str] = set()
    for root in sorted(roots, key=lambda label: (-strength.get(label, 0.0), label)):
        found: list[str] = []
        descend(root, found, seen)
        for candidate in found:
            if candidate in accepted or any(explained_by(candidate, a) for a in accepted):
                continue
            accepted.append(candidate)

    def confirmed(candidate: str, explanations: list[str]) -> bool:
        own = items[candidate]
        questions = []
        for ancestor, ancestor_items in items.items():
            if not ancestor_items < own or ancestor in explanations:
                continue
            # Remove the part of every explanation that falls inside this ancestor.
            parts = []
            for other in explanations:
                overlap = _intersection(ancestor_items, items[other])
                if overlap is not None:
                    parts.append(overlap)
            if any(p not in by_items for p in parts) or not _disjoint(parts):
                continue  # not expressible as tracked, disjoint slices: cannot judge the rest
            questions.append((ancestor, sorted(by_items[p] for p in parts)))
        return not questions or "elevated" not in ask(questions)

    # Strength order can accept a small, noisy slice before the slice that really explains it;
    # drop an explanation that another one explains, unless they explain each other.
    settled = list(accepted)
    for label in accepted:
        others = [o for o in settled if o != label]
        if any(explained_by(label, o) and not explained_by(o, label) for o in others):
            settled.remove(label)
    result = [label for label in settled if confirmed(label, settled)]
    return sorted(result, key=lambda label: (len(items[label]), label))


def _disjoint(slices: list[frozenset[str]]) -> bool:
    """True when no two slices can hold the same event."""
    for i, a in enumerate(slices):
        for b in slices[i + 1 :]:
            if _intersection(a, b) is not None:
                return False
    return True
