"""Small-count suppression on its own: tables of every shape, checked by an independent reader.

The reader (tests/disclosure_helpers.py) lists every value a hidden figure
can take given what is shown and the sums; a figure with one value left is
recovered. dropbox/suppression.py must leave none.
"""

from __future__ import annotations

import random

import pytest

from dropbox.suppression import Relation, Shown, suppress
from tests.disclosure_helpers import possible_values, reader_domains, recovered


def _table(values: list[list[int]]) -> tuple[dict[str, int], list[Relation]]:
    """A table with its row totals, column totals and grand total, all published."""
    figures: dict[str, int] = {}
    relations = []
    rows, columns = len(values), len(values[0])
    for r in range(rows):
        for c in range(columns):
            figures[f"{r},{c}"] = values[r][c]
        figures[f"{r},T"] = sum(values[r])
        relations.append(Relation(f"{r},T", tuple(f"{r},{c}" for c in range(columns))))
    for c in [*range(columns), "T"]:
        figures[f"T,{c}"] = sum(figures[f"{r},{c}"] for r in range(rows))
        relations.append(Relation(f"T,{c}", tuple(f"{r},{c}" for r in range(rows))))
    relations.append(Relation("T,T", tuple(f"T,{c}" for c in range(columns))))
    return figures, relations


def _exposed(
    figures: dict[str, int], relations: list[Relation], states: dict[str, Shown], k: int
) -> dict[str, int]:
    shown = {key: value if states[key] is Shown.VALUE else None for key, value in figures.items()}
    return recovered(shown, states, relations, k, max(figures.values()) + k)


def test_a_lone_small_count_in_a_row_takes_a_partner() -> None:
    figures = {"a": 12, "b": 1, "c": 7, "total": 20}
    relations = [Relation("total", ("a", "b", "c"))]
    states = suppress(figures, relations, 3)
    assert states["b"] is Shown.FEWER
    assert states["c"] is Shown.WITHHELD  # the smaller of the others
    assert states["a"] is Shown.VALUE and states["total"] is Shown.VALUE
    assert not _exposed(figures, relations, states, 3)


def test_hiding_only_the_small_count_would_give_it_away() -> None:
    """Without a partner, subtraction finds it: the reader is not blind."""
    figures = {"a": 12, "b": 1, "c": 7, "total": 20}
    relations = [Relation("total", ("a", "b", "c"))]
    states = {k: Shown.FEWER if v < 3 else Shown.VALUE for k, v in figures.items()}
    assert _exposed(figures, relations, states, 3) == {"b": 1}


def test_a_partner_at_the_threshold_is_not_enough_when_the_bounds_pin_both() -> None:
    """0 and 3 adding up to a known 3: "fewer than 3" and "at least 3" leave one answer."""
    figures = {"a": 10, "b": 0, "c": 3, "total": 13}
    relations = [Relation("total", ("a", "b", "c"))]
    pinned = {**{k: Shown.VALUE for k in figures}, "b": Shown.FEWER, "c": Shown.WITHHELD}
    assert _exposed(figures, relations, pinned, 3) == {"b": 0, "c": 3}
    states = suppress(figures, relations, 3)
    assert states["b"] is Shown.FEWER and states["a"] is Shown.WITHHELD
    assert states["c"] is Shown.VALUE
    assert not _exposed(figures, relations, states, 3)


def test_two_small_counts_in_a_row_protect_each_other() -> None:
    figures = {"a": 12, "b": 1, "c": 2, "total": 15}
    relations = [Relation("total", ("a", "b", "c"))]
    states = suppress(figures, relations, 3)
    assert [k for k, s in states.items() if s is not Shown.VALUE] == ["b", "c"]
    assert not _exposed(figures, relations, states, 3)


def test_a_small_total_hides_its_parts_and_something_above_it() -> None:
    figures = {"x": 1, "y": 1, "sub": 2, "z": 9, "total": 11}
    relations = [Relation("sub", ("x", "y")), Relation("total", ("sub", "z"))]
    states = suppress(figures, relations, 3)
    assert states["sub"] is Shown.FEWER
    assert not _exposed(figures, relations, states, 3)


@pytest.mark.parametrize("threshold", [2, 3, 5])
def test_random_tables_with_all_their_totals_leave_every_hidden_figure_open(threshold: int) -> None:
    rng = random.Random(threshold)  # noqa: S311 - test data, not secrets
    for _ in range(150):
        rows, columns = rng.randint(1, 5), rng.randint(1, 4)
        values = [
            [rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 9, 14]) for _ in range(columns)]
            for _ in range(rows)
        ]
        figures, relations = _table(values)
        states = suppress(figures, relations, threshold)
        assert all(states[k] is Shown.FEWER for k, v in figures.items() if v < threshold), values
        found = _exposed(figures, relations, states, threshold)
        assert all(_beyond_any_marking(key, figures, relations, states) for key in found), values


def _beyond_any_marking(
    key: str, figures: dict[str, int], relations: list[Relation], states: dict[str, Shown]
) -> bool:
    """True for the one case no marking can hide, at a threshold of 2 only: a hidden total
    of exactly 2 whose two parts are each "fewer than 2" leaves 1 and 1 (see the next test)."""
    return any(
        (key == r.total or key in r.parts)
        and figures[r.total] == 2
        and len(r.parts) == 2
        and all(states[p] is Shown.FEWER and figures[p] == 1 for p in r.parts)
        for r in relations
    )


def test_at_a_threshold_of_two_one_and_one_making_two_cannot_be_hidden() -> None:
    """ "Fewer than 2" is 0 or 1, a hidden total is at least 2: only 1 + 1 = 2 fits. Any mark
    that set this case apart would tell it too, so docs/security.md says so, and 3 (the
    default) has no such case: its random tables above leave every hidden figure open."""
    figures = {"a": 1, "b": 1, "sub": 2, "c": 9, "total": 11}
    relations = [Relation("sub", ("a", "b")), Relation("total", ("sub", "c"))]
    states = suppress(figures, relations, 2)
    assert states["a"] is Shown.FEWER and states["b"] is Shown.FEWER
    assert set(_exposed(figures, relations, states, 2)) <= {"a", "b", "sub"}
    assert not _exposed(figures, relations, suppress(figures, relations, 3), 3)


def test_internal_figures_constrain_the_reader_but_need_no_protection() -> None:
    """closed = in_time + late_closed (never shown); in_time shown, closed hidden small."""
    figures = {"closed": 2, "in_time": 0, "late_closed": 2, "open": 10, "total": 12}
    relations = [
        Relation("total", ("open", "closed")),
        Relation("closed", ("in_time", "late_closed")),
    ]
    states = suppress(figures, relations, 3, internal=frozenset({"late_closed"}))
    assert states["late_closed"] is Shown.INTERNAL
    assert not _exposed(figures, relations, states, 3)


def test_the_reader_counts_every_possibility() -> None:
    relations = [Relation("total", ("a", "b", "c"))]
    states = {"a": Shown.VALUE, "b": Shown.FEWER, "c": Shown.FEWER, "total": Shown.VALUE}
    shown = {"a": 5, "b": None, "c": None, "total": 7}
    domains = reader_domains(shown, states, 3, 10)
    assert possible_values("b", domains, relations, stop_after=10) == [0, 1, 2]


def test_a_threshold_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        suppress({"a": 1}, [], 1)
