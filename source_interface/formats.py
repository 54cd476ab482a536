"""Sizes and dates as people read them, in the language of the source's page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_babel import format_date, format_decimal, ngettext
from flask_babel import lazy_gettext as _l

# Decimal units (1 KB = 1,000 bytes), as phones and macOS show sizes.
STEP = 1000
# The unit words are the translators' (French says "Mo" for "MB").
UNITS = (_l("%(size)s KB"), _l("%(size)s MB"), _l("%(size)s GB"))


def size_text(size: int) -> str:
    """A size as people say it: "512 bytes", "230 KB", "1.4 MB" ("1,4 Mo" in French)."""
    if size < STEP:
        return str(ngettext("%(num)d byte", "%(num)d bytes", size))
    value = size / STEP
    for unit in UNITS[:-1]:
        # Rounded before choosing the unit, so that 999,960 bytes is "1 MB", not "1,000 KB".
        if _rounded(value) < STEP:
            return _with_unit(unit, value)
        value /= STEP
    return _with_unit(UNITS[-1], value)


def _rounded(value: float) -> float:
    """One decimal below 100 ("1.4 MB"), none above ("230 KB")."""
    return round(value, 1) if value < 100 else float(round(value))


def _with_unit(unit: Any, value: float) -> str:
    return str(unit) % {"size": format_decimal(_rounded(value), format="#,##0.#")}


def date_text(moment: datetime) -> str:
    """The day of `moment` in words ("7 December 2026"), never the time."""
    return str(format_date(moment.date(), format="long"))
