"""Bar charts drawn here, on the officer's machine, as SVG inside the page: no script, no resource.

Each chart is readable without colour: every office has its own fill
pattern (solid, diagonal lines, dots), shown in the legend, and each bar
carries its number as text. A figure the statistics hide gets no bar, only
the words the table beside it shows. Everything is drawn in `currentColor`,
so the chart follows the page's text colour (dark mode, print). The table
beside each chart holds the same figures as text: the chart is a picture
of it (role="img" with a title saying so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 640
LABEL_WIDTH = 220
VALUE_WIDTH = 120
BAR_HEIGHT = 14
BAR_GAP = 3
GROUP_GAP = 10
LEGEND_HEIGHT = 24
MAX_LABEL_CHARS = 26


@dataclass(frozen=True)
class Series:
    """One column of the table beside the chart (an office, or all offices)."""

    name: str
    values: Sequence[int | None]  # None: hidden
    texts: Sequence[str]  # what the table shows for each value


# Fill patterns by series: what tells the offices apart, in black and white.
_PATTERNS = (
    '<rect width="6" height="6" fill="currentColor"/>',
    '<path d="M-1,1 l2,-2 M0,6 l6,-6 M5,7 l2,-2" stroke="currentColor" stroke-width="1.5"/>',
    '<circle cx="3" cy="3" r="1.4" fill="currentColor"/>',
    '<path d="M0,3 h6 M3,0 v6" stroke="currentColor" stroke-width="1"/>',
)


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def bar_chart(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """A horizontal bar chart: one group of bars a label, one bar a series."""
    shown = [v for s in series for v in s.values if v is not None]
    largest = max(shown, default=0) or 1
    span = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    group = len(series) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP
    legend = LEGEND_HEIGHT if len(series) > 1 else 0
    height = legend + len(labels) * (group + GROUP_GAP) + GROUP_GAP
    title_id = f"{chart_id}-title"
    parts = [
        f'<svg class="chart-svg" role="img" aria-labelledby="{title_id}"'
        f' viewBox="0 0 {WIDTH} {height}" width="100%" preserveAspectRatio="xMinYMin meet"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{title_id}">{escape(title)}</title>',
        "<defs>",
    ]
    for number in range(len(series)):
        parts.append(
            f'<pattern id="{chart_id}-p{number}" width="6" height="6"'
            f' patternUnits="userSpaceOnUse">{_PATTERNS[number % len(_PATTERNS)]}</pattern>'
        )
    parts.append("</defs>")
    if legend:
        x = 0
        for number, one in enumerate(series):
            parts.append(
                f'<rect x="{x}" y="4" width="14" height="14" fill="url(#{chart_id}-p{number})"'
                ' stroke="currentColor"/>'
                f'<text x="{x + 20}" y="16" font-size="13" fill="currentColor">'
                f"{escape(one.name)}</text>"
            )
            x += 20 + 9 * len(one.name) + 24
    y = legend + GROUP_GAP
    for row, label in enumerate(labels):
        middle = y + group / 2 + 4
        parts.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{middle:.0f}" font-size="13" text-anchor="end"'
            f' fill="currentColor">{escape(_short(label))}</text>'
        )
        for number, one in enumerate(series):
            top = y + number * (BAR_HEIGHT + BAR_GAP)
            value = one.values[row]
            text = one.texts[row]
            if value is None:
                parts.append(
                    f'<text x="{LABEL_WIDTH + 4}" y="{top + BAR_HEIGHT - 3}" font-size="12"'
                    f' font-style="italic" fill="currentColor">{escape(text)}</text>'
                )
                continue
            width = round(span * value / largest, 1)
            parts.append(
                f'<rect x="{LABEL_WIDTH}" y="{top}" width="{width}" height="{BAR_HEIGHT}"'
                f' fill="url(#{chart_id}-p{number})" stroke="currentColor" stroke-width="1"/>'
                f'<text x="{LABEL_WIDTH + width + 5}" y="{top + BAR_HEIGHT - 3}" font-size="12"'
                f' fill="currentColor">{escape(text)}</text>'
            )
        y += group + GROUP_GAP
    parts.append(
        f'<line x1="{LABEL_WIDTH}" y1="{legend}" x2="{LABEL_WIDTH}" y2="{height}"'
        ' stroke="currentColor" stroke-width="1"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - each text went through escape()  # nosec B704
