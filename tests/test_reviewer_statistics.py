"""The reviewer app's statistics page: tables and charts, its CSV and its print, as officers see it.

The page and the CSV come from the real case server in-process. Reports are
written as rows (statistics read metadata only). What a reader can work out
from the CSV is checked with the independent reader of
tests/disclosure_helpers.py and the sums of tests/test_statistics.py.
"""

from __future__ import annotations

import csv
import html
import io
import random
import re
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dropbox.statistics import ALL
from dropbox.suppression import Shown
from tests.reviewer_helpers import World, audit_actions, signed_in_client
from tests.test_statistics import (
    OFFICES,
    _insert,
    _random_rows,
    _row,
    assert_nothing_hidden_can_be_worked_out,
    reader_names,
    reader_relations,
)

YEAR = datetime.now(UTC).year - 1
TITLES = {
    "Reports received, by category": "received",
    "Where those reports stand today": "status",
    "Closed reports, by outcome": "outcome",
    "Referrals and exports": "referrals",
    "Acknowledgement within 7 days": "acknowledgement",
    "Feedback within 3 months": "feedback",
    "Overdue today": "overdue",
    "Compared with a year before": "year",
}


def _page_tables(page: str) -> list[list[list[str]]]:
    """Each table of the page: its rows of cell texts (header row first)."""
    tables = []
    for table in re.findall(r"<table.*?</table>", page, re.S):
        rows = []
        for row in re.findall(r"<tr.*?</tr>", table, re.S):
            cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
            rows.append([html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
        tables.append(rows)
    return tables


def _csv_tables(text: str) -> list[list[list[str]]]:
    """The CSV's tables (after its three lines about the page), each header row first."""
    rows = list(csv.reader(io.StringIO(text)))
    tables: list[list[list[str]]] = []
    for row in rows[3:]:
        if not row:
            tables.append([])
        else:
            tables[-1].append(row)
    return tables


def _client(reviewer: Flask, world: World, role: str) -> FlaskClient:
    return signed_in_client(reviewer, world, role)


def test_the_page_shows_tables_charts_and_small_counts_as_fewer_than_three(
    reviewer: Flask, world: World
) -> None:
    rows = [_row(n, "OIO", "fraud", datetime(YEAR, 3, 1)) for n in range(1, 8)]
    rows.append(_row(8, "OIO", "harassment", datetime(YEAR, 3, 1)))
    _insert(world.instance, rows)
    client = _client(reviewer, world, "oio")
    response = client.get(f"/statistics?year={YEAR}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    tables = {t[0][0] if t else "": t for t in _page_tables(page)}
    received = next(t for t in _page_tables(page) if any(r[0] == "Harassment" for r in t))
    by_label = {r[0]: r[1:] for r in received}
    assert by_label["Harassment"] == ["fewer than 3"]
    assert by_label["Total received"] == ["8"]
    # The categories nobody chose are hidden alike, so 1 cannot be told from 0.
    assert by_label["Fraud, corruption or misuse of resources"] == ["7"]
    assert by_label["Discrimination"] == ["fewer than 3"]
    assert tables
    # Every chart is an inline SVG with a title, in patterns, and its table beside it.
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) >= 6
    for chart in charts:
        assert 'role="img"' in chart and "<title" in chart and "<pattern" in chart
        assert not re.search(r"\sstyle=", chart)  # a style attribute the CSP would refuse
    assert "fewer than 3" in charts[0] and ">7<" in charts[0]
    assert "@media print" in client.get("/static/style.css").get_data(as_text=True)


def test_the_csv_holds_exactly_what_the_page_shows_and_its_download_is_recorded(
    reviewer: Flask, world: World
) -> None:
    _insert(world.instance, _random_rows(random.Random(11), 40, YEAR))  # noqa: S311 - test data, not secrets
    client = _client(reviewer, world, "admin")
    query = f"office=all&year={YEAR}&from_month=1&to_month=12"
    page = client.get(f"/statistics?{query}").get_data(as_text=True)
    response = client.get(f"/statistics.csv?{query}")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="statistics-all-{YEAR}-01-12.csv"'
    )
    from_page = [t for t in _page_tables(page)]
    from_csv = _csv_tables(response.get_data(as_text=True))
    assert len(from_csv) == len(from_page) == 9
    for shown, written in zip(from_page, from_csv, strict=True):
        assert shown[1:] == written[1:]  # the rows, cell for cell
        assert shown[0][1:] == written[0][1:]  # the columns
    actions = audit_actions(world.instance)
    assert actions.count("statistics.view") == 1 and actions.count("statistics.download") == 1


@pytest.mark.parametrize("seed", range(2))
def test_no_hidden_count_can_be_worked_out_from_the_csv_files(
    reviewer: Flask, world: World, seed: int
) -> None:
    """The CSVs an administrator can download, read back as a reader would, hide what they hide."""
    _insert(world.instance, _random_rows(random.Random(100 + seed), 45, YEAR))  # noqa: S311 - test data, not secrets
    client = _client(reviewer, world, "admin")
    seen: dict[str, tuple[int | None, Shown]] = {}
    categories: list[str] = []
    labels = {c.label: c.code for c in world.instance.config.categories}
    statuses = {
        s.capitalize(): s
        for s in ("received", "acknowledged", "under assessment", "referred", "reopened")
    }
    for office in (*OFFICES, ALL):
        text = client.get(f"/statistics.csv?office={office}&year={YEAR}").get_data(as_text=True)
        for table in _csv_tables(text):
            key = TITLES.get(table[0][0])
            if key is None:
                continue  # times, which are not counts
            columns = ["all" if c == "All offices" else c for c in table[0][1:]]
            for row in table[1:]:
                name = _row_key(key, row[0], labels, statuses)
                if name is None:
                    continue
                if key == "received" and name not in ("total",) and name not in categories:
                    categories.append(name)
                for column, text_cell in zip(columns, row[1:], strict=True):
                    figure = _read(text_cell)
                    reader = f"{reader_names(key, name)}|{column}"
                    assert seen.setdefault(reader, figure) == figure, reader
    assert_nothing_hidden_can_be_worked_out(seen, reader_relations(categories), 3)


def _read(text: str) -> tuple[int | None, Shown]:
    if text.startswith("fewer than"):
        return None, Shown.FEWER
    if text == "not shown":
        return None, Shown.WITHHELD
    return int(text.split(" ")[0]), Shown.VALUE


def _row_key(
    table: str, label: str, categories: dict[str, str], statuses: dict[str, str]
) -> str | None:
    """A CSV row label back to the row's key (None: a row derived from others)."""
    fixed = {
        "Total received": "total",
        "Total closed": "closed",
        "Closed": "closed",
        "Still open (all of the above)": "open",
        "Referred to another office": "sent",
        "Referred here by another office": "received",
        "Exported for an investigator": "exported",
        "Acknowledged within 7 days": "within",
        "Closed within 3 months": "within",
        "Acknowledged late, or overdue today": "late",
        "Closed late, or open and overdue today": "late",
        "Not yet due": "pending",
        "Acknowledgement overdue": "acknowledge",
        "Feedback overdue": "feedback",
        str(YEAR - 1): "previous",
        str(YEAR): "current",
    }
    if label.startswith(("Share", "Change")):
        return None
    if table == "received" and label in categories:
        return categories[label]
    if table == "status" and label in statuses:
        return statuses[label]
    if table == "outcome" and label not in fixed:
        return label.lower()
    return fixed[label]


def test_an_officer_can_choose_only_their_offices_and_bad_choices_are_told(
    reviewer: Flask, world: World
) -> None:
    client = _client(reviewer, world, "oio")
    page = client.get(f"/statistics?year={YEAR}").get_data(as_text=True)
    assert 'name="office" value="OIO"' in page and "All offices" not in page
    refused = client.get(f"/statistics?office=ECO&year={YEAR}")
    assert refused.status_code == 400
    assert "You may see the statistics of your own offices only." in refused.get_data(as_text=True)
    odd = client.get("/statistics?year=nineteen&from_month=9&to_month=2")
    text = odd.get_data(as_text=True)
    assert odd.status_code == 400
    assert "Type a year from 2000" in text and "whole year is shown" in text
    assert "Reports received, by category" in text  # this year's page, all the same
    admin = _client(reviewer, world, "admin").get(f"/statistics?office=all&year={YEAR}")
    assert admin.status_code == 200 and "All offices" in admin.get_data(as_text=True)
    assert "statistics.view" in audit_actions(world.instance)


FEW_REPORTS = "There are few reports in this period, so most figures below are hidden"


def test_a_period_with_few_reports_says_once_at_the_top_that_most_figures_are_hidden(
    reviewer: Flask, world: World
) -> None:
    rows = [_row(1000 + n, "OIO", "fraud", datetime(YEAR, 3, 1)) for n in range(4)]
    rows += _random_rows(random.Random(21), 900, YEAR - 3)  # noqa: S311 - test data, not secrets
    _insert(world.instance, rows)
    client = _client(reviewer, world, "oio")

    few = client.get(f"/statistics?year={YEAR}").get_data(as_text=True)
    assert few.count(FEW_REPORTS) == 1
    assert few.index(FEW_REPORTS) < few.index('class="filters') < few.index("<table")
    assert "fewer than 3" in few and "not shown" in few

    many = client.get(f"/statistics?year={YEAR - 3}").get_data(as_text=True)
    assert FEW_REPORTS not in many
    assert "fewer than 3" in many  # a few small counts, hidden as always, need no notice
