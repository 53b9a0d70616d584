"""Early-termination policies: which running trials to cancel, from the primary metric values
they have logged so far.

The controller calls :meth:`EarlyTerminationPolicy.to_cancel` with every trial's series of
primary metric values (in logged order). A trial is evaluated when it has logged its k-th value,
k past ``delay_evaluation`` and a multiple of ``evaluation_interval`` (v1 counts intervals in
logged values), against the other trials' values at that same k, so a trial that started late is
compared with the others at the same stage, not with where they ended.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..errors import SweepConfigError


def _whole(name: str, v: Any, least: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < least:
        raise SweepConfigError(f"{name} is a whole number >= {least}, got {v!r}")
    return v


class EarlyTerminationPolicy:
    """Base of the policies: when to evaluate, and v1's ``to_json()`` form."""

    POLICY_NAME = ""

    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 0) -> None:
        self.evaluation_interval = _whole("evaluation_interval", evaluation_interval, 1)
        self.delay_evaluation = _whole("delay_evaluation", delay_evaluation, 0)

    def _props(self) -> dict[str, Any]:
        return {
            "evaluation_interval": self.evaluation_interval,
            "delay_evaluation": self.delay_evaluation,
        }

    def to_json(self) -> dict[str, Any]:
        """v1's form: ``{'name': 'Bandit', 'properties': {...}}``."""
        return {"name": self.POLICY_NAME, "properties": self._props()}

    def due(self, k: int) -> bool:
        """Whether a trial that has logged ``k`` values is evaluated now."""
        return k > self.delay_evaluation and k % self.evaluation_interval == 0

    def to_cancel(
        self, series: dict[str, list[float]], running: set[str], maximize: bool
    ) -> dict[str, str]:
        """``{trial id: reason}`` for the running trials to cancel now. ``series``: every
        trial's primary metric values so far (finished trials too: they are the yardstick)."""
        out = {}
        for tid in running:
            values = series.get(tid) or []
            k = len(values)
            if not values or not self.due(k):
                continue
            peers = {o: v[:k] for o, v in series.items() if len(v) >= k}
            reason = self._judge(tid, peers, k, maximize)
            if reason:
                out[tid] = reason
        return out

    def _judge(self, tid: str, peers: dict[str, list[float]], k: int, maximize: bool) -> str | None:
        return None


class NoTerminationPolicy(EarlyTerminationPolicy):
    """Never cancels a trial (the default)."""

    POLICY_NAME = "Default"

    def __init__(self) -> None:
        super().__init__()

    def to_json(self) -> dict[str, Any]:
        """v1's form: ``{'name': 'Default', 'properties': {}}``."""
        return {"name": self.POLICY_NAME, "properties": {}}


def _best(values: list[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


class BanditPolicy(EarlyTerminationPolicy):
    """Cancel a trial whose value at an evaluation is not within ``slack_factor`` (a ratio) or
    ``slack_amount`` (an absolute distance) of the best trial's value at that point. Give
    exactly one of them."""

    POLICY_NAME = "Bandit"

    def __init__(
        self,
        evaluation_interval: int = 1,
        slack_factor: float | None = None,
        slack_amount: float | None = None,
        delay_evaluation: int = 0,
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation)
        if (slack_factor is None) == (slack_amount is None):
            raise SweepConfigError("BanditPolicy needs exactly one of slack_factor or slack_amount")
        for n, v in (("slack_factor", slack_factor), ("slack_amount", slack_amount)):
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0
            ):
                raise SweepConfigError(f"BanditPolicy {n} is a number >= 0, got {v!r}")
        self.slack_factor = slack_factor
        self.slack_amount = slack_amount

    def _props(self) -> dict[str, Any]:
        return {
            **super()._props(),
            "slack_factor": self.slack_factor,
            "slack_amount": self.slack_amount,
        }

    def _judge(self, tid: str, peers: dict[str, list[float]], k: int, maximize: bool) -> str | None:
        mine = peers[tid][k - 1]
        best = _best([v[k - 1] for v in peers.values()], maximize)
        if self.slack_factor is not None:
            # v1's formula: the bound is best/(1+slack) when maximizing, best*(1+slack) else.
            bound = best / (1 + self.slack_factor) if maximize else best * (1 + self.slack_factor)
        else:
            bound = best - self.slack_amount if maximize else best + self.slack_amount  # type: ignore[operator]
        worse = mine < bound if maximize else mine > bound
        if worse:
            return (
                f"BanditPolicy: at value {k} the primary metric was {mine:g}, outside the slack "
                f"of the best trial's {best:g} (bound {bound:g})"
            )
        return None


class MedianStoppingPolicy(EarlyTerminationPolicy):
    """Cancel a trial whose best value so far is worse than the median of the other trials'
    running averages at the same point."""

    POLICY_NAME = "MedianStopping"

    def _judge(self, tid: str, peers: dict[str, list[float]], k: int, maximize: bool) -> str | None:
        others = [statistics.fmean(v) for o, v in peers.items() if o != tid]
        if not others:
            return None
        median = statistics.median(others)
        mine = _best(peers[tid], maximize)
        if (mine < median) if maximize else (mine > median):
            return (
                f"MedianStoppingPolicy: best primary metric {mine:g} after {k} values is worse "
                f"than the median {median:g} of the other trials' running averages"
            )
        return None


class TruncationSelectionPolicy(EarlyTerminationPolicy):
    """At each evaluation, cancel the trial if it ranks in the lowest ``truncation_percentage``
    percent of the trials at that point."""

    POLICY_NAME = "TruncationSelection"

    def __init__(
        self, truncation_percentage: int, evaluation_interval: int = 1, delay_evaluation: int = 0
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation)
        if (
            isinstance(truncation_percentage, bool)
            or not isinstance(truncation_percentage, (int, float))
            or not 1 <= truncation_percentage <= 99
        ):
            raise SweepConfigError(
                f"truncation_percentage is a percentage from 1 to 99, got {truncation_percentage!r}"
            )
        self.truncation_percentage = truncation_percentage

    def _props(self) -> dict[str, Any]:
        return {
            **super()._props(),
            "truncation_percentage": self.truncation_percentage,
            "exclude_finished_jobs": False,
        }

    def _judge(self, tid: str, peers: dict[str, list[float]], k: int, maximize: bool) -> str | None:
        if len(peers) < 2:
            return None
        ranked = sorted(peers, key=lambda o: peers[o][k - 1], reverse=maximize)
        cut = math.floor(len(ranked) * self.truncation_percentage / 100)
        if cut and tid in ranked[len(ranked) - cut :]:
            return (
                f"TruncationSelectionPolicy: primary metric {peers[tid][k - 1]:g} at value {k} is "
                f"in the lowest {self.truncation_percentage}% of {len(ranked)} trials"
            )
        return None


_POLICIES = {
    c.POLICY_NAME: c
    for c in (NoTerminationPolicy, BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy)
}


def from_json(data: dict[str, Any] | None) -> EarlyTerminationPolicy:
    """The policy saved by ``to_json()`` (None: :class:`NoTerminationPolicy`)."""
    if not data or data.get("name") == "Default":
        return NoTerminationPolicy()
    props = dict(data.get("properties") or {})
    props.pop("exclude_finished_jobs", None)
    return _POLICIES[data["name"]](**props)


_SHORT = {
    "bandit": (BanditPolicy, {"slack": "slack_factor", "amount": "slack_amount"}),
    "median": (MedianStoppingPolicy, {}),
    "truncation": (TruncationSelectionPolicy, {"percent": "truncation_percentage"}),
}
_COMMON = {"interval": "evaluation_interval", "delay": "delay_evaluation"}


def parse_policy(text: str | None) -> EarlyTerminationPolicy | None:
    """The command line's ``--policy``: ``none``, ``bandit:slack=0.1,interval=1,delay=2``
    (or ``amount=``), ``median:interval=1,delay=5``, ``truncation:percent=20,interval=1``.

    :raises SweepConfigError: an unknown policy or setting, a value that is not a number.
    """
    if text is None or text.strip().lower() in ("", "none"):
        return None
    kind, _, rest = text.strip().partition(":")
    if kind.lower() not in _SHORT:
        raise SweepConfigError(
            f"--policy {text!r}: unknown policy {kind!r}; use none, bandit, median or truncation"
        )
    cls, names = _SHORT[kind.lower()]
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        arg = {**_COMMON, **names}.get(key.strip())
        if not eq or arg is None:
            allowed = ", ".join([*names, *_COMMON])
            raise SweepConfigError(f"--policy {text!r}: {kind} takes {allowed} (as key=value)")
        try:
            num = float(value)
        except ValueError:
            raise SweepConfigError(f"--policy {text!r}: {key} must be a number") from None
        kwargs[arg] = (
            int(num)
            if arg in ("evaluation_interval", "delay_evaluation") and num.is_integer()
            else num
        )
    if cls is TruncationSelectionPolicy and "truncation_percentage" not in kwargs:
        raise SweepConfigError(f"--policy {text!r}: truncation needs percent=N")
    return cls(**kwargs)
