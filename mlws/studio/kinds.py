"""v1's structured metric kinds as the studio draws them: a confusion matrix as a grid of counts
shaded by size (a heat map), residuals and predictions as histogram bars. Only numbers and
labels go in; the templates put labels in as text (autoescaped), so a ``<script>`` class label
stays text. A value without v1's shape comes back as None and the page shows its JSON.
"""

from __future__ import annotations

import math
from typing import Any

#: Most classes of a confusion matrix drawn as a grid (more: its JSON).
MAX_CLASSES = 100
#: Most bins of a histogram drawn as bars.
MAX_BINS = 1000
#: The histogram's drawing area in SVG units (it scales down with the page).
WIDTH, HEIGHT, PAD = 460.0, 200.0, 28.0


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _numbers(values: Any, n: int | None = None) -> list[float] | None:
    """``values`` as finite floats (``n`` of them when given), or None."""
    if not isinstance(values, list) or (n is not None and len(values) != n):
        return None
    out = [_finite(v) for v in values]
    return None if any(v is None for v in out) else out  # type: ignore[return-value]


def _data(value: Any) -> dict[str, Any] | None:
    """The ``data`` part of a v1 schema'd value (``{"schema_type", "data": {...}}``) or the
    value itself when it is already that dict."""
    if not isinstance(value, dict):
        return None
    inner = value.get("data", value)
    return inner if isinstance(inner, dict) else None


def confusion_matrix(value: Any) -> dict[str, Any] | None:
    """``{"labels": [str], "rows": [[{"count", "shade"}]], "max"}`` of a logged confusion
    matrix (rows: actual class, columns: predicted); ``shade`` is the count over the largest
    one (0..1). None: not v1's shape (``class_labels`` and a square ``matrix`` of numbers)."""
    data = _data(value)
    if data is None:
        return None
    labels, matrix = data.get("class_labels"), data.get("matrix")
    if not isinstance(labels, list) or not isinstance(matrix, list):
        return None
    n = len(labels)
    if not 0 < n <= MAX_CLASSES or len(matrix) != n:
        return None
    rows = [_numbers(row, n) for row in matrix]
    if any(r is None for r in rows):
        return None
    top = max((v for r in rows for v in r), default=0.0)  # type: ignore[union-attr]
    return {
        "labels": [str(label) for label in labels],
        "max": top,
        "rows": [
            [{"count": v, "shade": round(v / top, 3) if top > 0 else 0.0} for v in r]  # type: ignore[union-attr]
            for r in rows
        ],
    }


def _tick(v: float) -> str:
    return f"{v:.4g}"


def histogram(value: Any) -> dict[str, Any] | None:
    """Bars of v1's residuals (``bin_edges``, ``bin_counts``) or predictions (also
    ``bin_averages`` and ``bin_errors``: each bin's mean prediction, drawn as a mark at that
    value on the true-value axis, so a good model's marks follow the diagonal). Coordinates are
    in a ``WIDTH`` x ``HEIGHT`` SVG box. None: not that shape."""
    data = _data(value)
    if data is None or "bin_edges" not in data or "bin_counts" not in data:
        return None
    counts = _numbers(data.get("bin_counts"))
    if counts is None or not 0 < len(counts) <= MAX_BINS or min(counts) < 0:
        return None
    edges = _numbers(data.get("bin_edges"), len(counts) + 1)
    if edges is None or any(b < a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        return None
    averages = _numbers(data.get("bin_averages"), len(counts)) if "bin_averages" in data else None
    errors = _numbers(data.get("bin_errors"), len(counts)) if "bin_errors" in data else None
    top = max(counts) or 1.0
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x(v: float) -> float:
        return round(PAD + (v - lo) / span * inner_w, 2)

    def y_value(v: float) -> float:
        # Averages are predictions of the target, on the edges' (true value) scale.
        return round(HEIGHT - PAD - (min(max(v, lo), hi) - lo) / span * inner_h, 2)

    bars = []
    for i, c in enumerate(counts):
        h = round(c / top * inner_h, 2)
        label = f"[{_tick(edges[i])}, {_tick(edges[i + 1])}): {c:g}"
        if averages is not None:
            label += f"; mean prediction {_tick(averages[i])}"
            if errors is not None:
                label += f" ± {_tick(errors[i])}"
        bar = {
            "x": x(edges[i]),
            "w": max(0.5, round(x(edges[i + 1]) - x(edges[i]) - 1, 2)),
            "y": round(HEIGHT - PAD - h, 2),
            "h": h,
            "label": label,
            "mark": None,
        }
        if averages is not None and c > 0:  # an empty bin has no mean prediction to mark
            bar["mark"] = {
                "cx": round((x(edges[i]) + x(edges[i + 1])) / 2, 2),
                "cy": y_value(averages[i]),
            }
        bars.append(bar)
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "pad": PAD,
        "bars": bars,
        "max": top,
        "low": _tick(lo),
        "high": _tick(hi),
        "top": f"{top:g}",
        "predictions": averages is not None,
        # The ideal of a predictions chart: mean prediction = the bin's true value.
        "diagonal": [x(lo), y_value(lo), x(hi), y_value(hi)],
    }


def view(kind: str, value: Any) -> dict[str, Any] | None:
    """What a run page draws for a JSON-kind metric: ``{"kind": "confusion_matrix", ...}`` or
    ``{"kind": "histogram", ...}``; None for kinds drawn as JSON (accuracy tables) and values
    without v1's shape."""
    if kind == "confusion_matrix":
        cm = confusion_matrix(value)
        return None if cm is None else {"kind": "confusion_matrix", **cm}
    if kind in ("residuals", "predictions"):
        h = histogram(value)
        return None if h is None else {"kind": "histogram", **h}
    return None
