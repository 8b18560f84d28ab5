"""A matplotlib figure's data as E2B's `e2b/chart` result (what `e2b_code_interpreter`'s
`result.chart` reads): line, scatter and bar charts of one axes, a figure of several axes as a
superchart of them; anything else is no chart (the figure still comes as PNG).

Runs inside a kernel (imported by a silent snippet the server sends when a kernel starts), on
the template's python3 with its IPython and matplotlib."""

from __future__ import annotations

import math
from typing import Any


def _value(v: Any) -> Any:
    """A JSON value for a data point: numbers as float (NaN and infinities as None)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else None


def _points(xs: Any, ys: Any) -> list[list[Any]]:
    return [[_value(x), _value(y)] for x, y in zip(xs, ys, strict=False)]


def _label(artist: Any) -> str:
    label = str(artist.get_label() or "")
    return "" if label.startswith("_") else label  # matplotlib's own names (_child0, _line0)


def _axis(ax: Any) -> dict[str, Any]:
    return {
        "title": ax.get_title(),
        "x_label": ax.get_xlabel() or None,
        "y_label": ax.get_ylabel() or None,
        "x_unit": None,
        "y_unit": None,
    }


def _ticks(ax: Any) -> dict[str, Any]:
    return {
        "x_ticks": [_value(t) for t in ax.get_xticks()],
        "x_tick_labels": [t.get_text() for t in ax.get_xticklabels()],
        "x_scale": ax.get_xscale(),
        "y_ticks": [_value(t) for t in ax.get_yticks()],
        "y_tick_labels": [t.get_text() for t in ax.get_yticklabels()],
        "y_scale": ax.get_yscale(),
    }


def axes_chart(ax: Any) -> dict[str, Any] | None:
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer

    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if bars:
        ticks = zip(ax.get_xticks(), ax.get_xticklabels(), strict=False)
        names = {round(float(x), 6): t.get_text() for x, t in ticks}
        elements = []
        for container in bars:
            for rect in container.patches:
                center = round(rect.get_x() + rect.get_width() / 2, 6)
                elements.append(
                    {
                        "label": names.get(center, str(center)),
                        "group": _label(container),
                        "value": _value(rect.get_height()),
                    }
                )
        return {"type": "bar", **_axis(ax), "elements": elements}
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    if scatters:
        elements = [
            {"label": _label(c), "points": [[_value(x), _value(y)] for x, y in c.get_offsets()]}
            for c in scatters
        ]
        return {"type": "scatter", **_axis(ax), **_ticks(ax), "elements": elements}
    lines = ax.get_lines()
    if lines:
        elements = [
            {
                "label": _label(line),
                "points": _points(line.get_xdata(), line.get_ydata()),
            }
            for line in lines
        ]
        return {"type": "line", **_axis(ax), **_ticks(ax), "elements": elements}
    return None


def figure_chart(figure: Any) -> dict[str, Any] | None:
    try:
        figure.canvas.draw()  # tick labels are set when the figure is drawn
        charts = [c for c in (axes_chart(ax) for ax in figure.get_axes()) if c is not None]
    except Exception:
        return None  # a figure we cannot read is still shown as PNG
    if len(charts) == 1:
        return charts[0]
    if not charts:
        return None
    title = figure._suptitle.get_text() if getattr(figure, "_suptitle", None) else ""
    return {"type": "superchart", "title": title, "elements": charts}


def register(shell: Any) -> None:
    """Add the `e2b/chart` format for matplotlib figures to the kernel's display formatter."""
    from IPython.core.formatters import BaseFormatter
    from matplotlib.figure import Figure

    class ChartFormatter(BaseFormatter):  # type: ignore[misc]
        def __call__(self, obj: Any) -> dict[str, Any] | None:
            return figure_chart(obj) if isinstance(obj, Figure) else None

    formatters = shell.display_formatter
    formatters.formatters["e2b/chart"] = ChartFormatter(parent=formatters)
