"""Largest-Triangle-Three-Buckets downsampling (Steinarsson, 2013): a long metric series drawn
as ~2,000 points keeps its peaks and shape, and the page stays small at 1M steps."""

from __future__ import annotations

from typing import Any


def lttb(points: list[list[Any]], threshold: int) -> list[list[Any]]:
    """At most ``threshold`` of ``points`` (``[[x, y], ...]`` sorted by x), the first and last
    always kept; each bucket keeps the point making the largest triangle with the point kept
    before it and the mean of the next bucket. Shorter series come back unchanged."""
    n = len(points)
    if threshold >= n or threshold < 3:
        return points
    out = [points[0]]
    every = (n - 2) / (threshold - 2)
    a = 0
    for i in range(threshold - 2):
        # The mean of the next bucket (the last point for the last bucket).
        start = int((i + 1) * every) + 1
        end = min(int((i + 2) * every) + 1, n)
        if start >= end:
            start, end = n - 1, n
        span = end - start
        avg_x = sum(p[0] for p in points[start:end]) / span
        avg_y = sum(p[1] for p in points[start:end]) / span
        lo = int(i * every) + 1
        hi = int((i + 1) * every) + 1
        ax, ay = points[a]
        best, best_area = lo, -1.0
        for j in range(lo, hi):
            x, y = points[j]
            area = abs((ax - avg_x) * (y - ay) - (ax - x) * (avg_y - ay))
            if area > best_area:
                best, best_area = j, area
        out.append(points[best])
        a = best
    out.append(points[-1])
    return out
