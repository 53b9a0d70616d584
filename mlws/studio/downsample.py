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
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    out = [points[0]]
    every = (n - 2) / (threshold - 2)
    a = 0
    for i in range(threshold - 2):
        # The mean of the next bucket (the last point for the last bucket).
        start = int((i + 1) * every) + 1
        end = min(int((i + 2) * every) + 1, n)
        if start >= end:
            start, end = n - 1, n
        avg_x = sum(xs[start:end]) / (end - start)
        avg_y = sum(ys[start:end]) / (end - start)
        lo = int(i * every) + 1
        hi = int((i + 1) * every) + 1
        ax, ay = xs[a], ys[a]
        # Twice the triangle's area is |k1*y + k2*x + k0|: linear in the candidate point, so a
        # comprehension (not a loop of Python statements) scores the bucket.
        k1, k2 = ax - avg_x, avg_y - ay
        k0 = -k1 * ay - k2 * ax
        areas = [abs(k1 * y + k2 * x + k0) for x, y in zip(xs[lo:hi], ys[lo:hi], strict=True)]
        a = lo + areas.index(max(areas))
        out.append(points[a])
    out.append(points[-1])
    return out
