"""A reader who tries to work hidden figures out: every value each one can take, by search.

Independent of dropbox/suppression.py (which looks for one move a figure):
given what a page shows (the shown values, which figures are hidden and
how, and the sums a reader can see), it lists, for a hidden figure, every
value consistent with all of it, by interval propagation and branching.
A figure with one possible value is recovered. The reader is given more
than a page says: an upper bound on every count (the largest true figure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dropbox.suppression import Relation, Shown

Domains = dict[str, tuple[int, int]]


def _propagate(domains: Domains, relations: Sequence[Relation]) -> Domains | None:
    """Narrow each figure's interval by the sums until nothing changes; None if impossible."""
    domains = dict(domains)
    changed = True
    while changed:
        changed = False
        for relation in relations:
            low_parts = sum(domains[p][0] for p in relation.parts)
            high_parts = sum(domains[p][1] for p in relation.parts)
            low, high = domains[relation.total]
            new = (max(low, low_parts), min(high, high_parts))
            if new != (low, high):
                domains[relation.total] = new
                changed = True
            low, high = domains[relation.total]
            if low > high:
                return None
            for part in relation.parts:
                part_low, part_high = domains[part]
                others_low = low_parts - part_low
                others_high = high_parts - part_high
                new = (max(part_low, low - others_high), min(part_high, high - others_low))
                if new != (part_low, part_high):
                    if new[0] > new[1]:
                        return None
                    domains[part] = new
                    low_parts += new[0] - part_low
                    high_parts += new[1] - part_high
                    changed = True
    return domains


def _feasible(domains: Domains, relations: Sequence[Relation]) -> bool:
    narrowed = _propagate(domains, relations)
    if narrowed is None:
        return False
    open_figures = [k for k, (low, high) in narrowed.items() if low < high]
    if not open_figures:
        return all(narrowed[r.total][0] == sum(narrowed[p][0] for p in r.parts) for r in relations)
    key = min(open_figures, key=lambda k: narrowed[k][1] - narrowed[k][0])
    low, high = narrowed[key]
    for value in range(low, high + 1):
        if _feasible({**narrowed, key: (value, value)}, relations):
            return True
    return False


def reader_domains(
    shown: Mapping[str, int | None],
    states: Mapping[str, Shown],
    threshold: int,
    ceiling: int,
) -> Domains:
    """What a reader knows of each figure before using the sums."""
    domains: Domains = {}
    for key, state in states.items():
        if state is Shown.VALUE:
            value = shown[key]
            assert value is not None
            domains[key] = (value, value)
        elif state is Shown.FEWER:
            domains[key] = (0, threshold - 1)
        elif state is Shown.WITHHELD:
            domains[key] = (threshold, max(threshold, ceiling))
        else:
            domains[key] = (0, ceiling)
    return domains


def possible_values(
    key: str, domains: Domains, relations: Sequence[Relation], stop_after: int = 2
) -> list[int]:
    """Values of `key` consistent with everything the reader knows (stops after `stop_after`)."""
    found = []
    low, high = domains[key]
    for value in range(low, high + 1):
        if _feasible({**domains, key: (value, value)}, relations):
            found.append(value)
            if len(found) >= stop_after:
                break
    return found


def recovered(
    shown: Mapping[str, int | None],
    states: Mapping[str, Shown],
    relations: Sequence[Relation],
    threshold: int,
    ceiling: int,
) -> dict[str, int]:
    """The hidden figures (not internal ones) a reader can work out, with their values."""
    domains = reader_domains(shown, states, threshold, ceiling)
    out = {}
    for key, state in states.items():
        if state in (Shown.FEWER, Shown.WITHHELD):
            values = possible_values(key, domains, relations)
            if len(values) < 2:
                out[key] = values[0] if values else -1
    return out
