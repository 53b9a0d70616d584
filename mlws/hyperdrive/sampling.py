"""Parameter expressions (``choice``, ``uniform``, ...) and the three samplings of a sweep.

An expression is v1's serialized form, a list ``[kind, [args]]`` (``choice(1, 2)`` is
``['choice', [[1, 2]]]``), so a sampling's ``to_json()`` matches v1's and a stored sweep
definition is plain JSON. Expressions are checked when a sampling is built: a bad one raises
:class:`~mlws.errors.SweepConfigError` before anything is recorded.

The samplers that draw values (:func:`make_sampler`) run in the sweep's controller process:
Grid enumerates the product of the choices in the order given; Random draws from
``random.Random(seed)`` (the seed is recorded on the sweep, so its draws can be told again) and
never proposes one point twice in a sweep: a repeat is drawn again, and a discrete space
(``choice``/``randint`` only) that is used up ends the sweep as an exhausted grid does (with a
continuous expression a repeat is improbable; after ``REDRAWS`` repeats in a row it stops too);
Bayesian asks Optuna's TPE sampler (the ``mlws[sweeps]`` extra) and tells it each finished
trial's best primary metric value.

A sweep that resumes earlier ones (``HyperDriveConfig(resume_from=...)``) gives its sampler
their finished trials (``prior``): Grid skips the points done already, Random draws again
rather than repeat one, Bayesian starts from a study that holds them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from typing import Any

from ..errors import SweepConfigError

#: Expression kind -> number of arguments after the kind (choice: one list of options).
_ARITY = {
    "choice": 1,
    "randint": 1,
    "uniform": 2,
    "loguniform": 2,
    "normal": 2,
    "lognormal": 2,
    "quniform": 3,
    "qloguniform": 3,
    "qnormal": 3,
    "qlognormal": 3,
}


def choice(*options: Any) -> list[Any]:
    """One of ``options`` (or of a single list/range given alone)."""
    if len(options) == 1 and isinstance(options[0], (list, tuple, range)):
        options = tuple(options[0])
    return ["choice", [list(options)]]


def randint(upper: int) -> list[Any]:
    """An integer in ``[0, upper)``."""
    return ["randint", [upper]]


def uniform(min_value: float, max_value: float) -> list[Any]:
    """A float uniformly in ``[min_value, max_value]``."""
    return ["uniform", [min_value, max_value]]


def quniform(min_value: float, max_value: float, q: float) -> list[Any]:
    """``round(uniform(min_value, max_value) / q) * q``."""
    return ["quniform", [min_value, max_value, q]]


def loguniform(min_value: float, max_value: float) -> list[Any]:
    """``exp(uniform(min_value, max_value))``: the bounds are logarithms, as in v1."""
    return ["loguniform", [min_value, max_value]]


def qloguniform(min_value: float, max_value: float, q: float) -> list[Any]:
    """``round(exp(uniform(min_value, max_value)) / q) * q``."""
    return ["qloguniform", [min_value, max_value, q]]


def normal(mu: float, sigma: float) -> list[Any]:
    """A float from the normal distribution of mean ``mu`` and standard deviation ``sigma``."""
    return ["normal", [mu, sigma]]


def qnormal(mu: float, sigma: float, q: float) -> list[Any]:
    """``round(normal(mu, sigma) / q) * q``."""
    return ["qnormal", [mu, sigma, q]]


def lognormal(mu: float, sigma: float) -> list[Any]:
    """``exp(normal(mu, sigma))``."""
    return ["lognormal", [mu, sigma]]


def qlognormal(mu: float, sigma: float, q: float) -> list[Any]:
    """``round(exp(normal(mu, sigma)) / q) * q``."""
    return ["qlognormal", [mu, sigma, q]]


_KNOWN = ", ".join(_ARITY)


def _number(name: str, kind: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SweepConfigError(f"parameter {name!r}: {kind}() takes finite numbers, got {v!r}")
    return float(v)


def check_expression(name: str, expr: Any) -> list[Any]:
    """``expr`` as a valid ``[kind, [args]]`` expression (tuples become lists).

    :raises SweepConfigError: an unknown kind, wrong arguments, empty bounds.
    """
    if not isinstance(name, str) or not name.strip("-"):
        raise SweepConfigError(f"parameter names are non-empty strings, got {name!r}")
    if (
        not isinstance(expr, (list, tuple))
        or len(expr) != 2
        or not isinstance(expr[1], (list, tuple))
    ):
        raise SweepConfigError(
            f"parameter {name!r}: {expr!r} is not a parameter expression; use one of "
            f"{_KNOWN} (from azureml.train.hyperdrive or mlws.hyperdrive)"
        )
    kind, args = expr[0], list(expr[1])
    if kind not in _ARITY:
        raise SweepConfigError(
            f"parameter {name!r}: unknown parameter expression {kind!r}; use one of {_KNOWN}"
        )
    if len(args) != _ARITY[kind]:
        raise SweepConfigError(
            f"parameter {name!r}: {kind}() takes {_ARITY[kind]} argument(s), got {len(args)}"
        )
    if kind == "choice":
        options = args[0]
        if not isinstance(options, (list, tuple)) or not options:
            raise SweepConfigError(f"parameter {name!r}: choice() needs at least one option")
        for o in options:
            if not (o is None or isinstance(o, (bool, int, float, str))):
                raise SweepConfigError(
                    f"parameter {name!r}: choice() options are numbers or strings, got {o!r}"
                )
        return ["choice", [list(options)]]
    if kind == "randint":
        upper = args[0]
        if isinstance(upper, bool) or not isinstance(upper, int) or upper < 1:
            raise SweepConfigError(
                f"parameter {name!r}: randint(upper) takes a whole number >= 1, got {upper!r}"
            )
        return ["randint", [upper]]
    nums = [_number(name, kind, a) for a in args]
    if kind in ("uniform", "loguniform", "quniform", "qloguniform") and nums[0] >= nums[1]:
        raise SweepConfigError(
            f"parameter {name!r}: {kind}(min, max) needs min < max, got {nums[0]:g} >= {nums[1]:g}"
        )
    if kind in ("normal", "lognormal", "qnormal", "qlognormal") and nums[1] <= 0:
        raise SweepConfigError(f"parameter {name!r}: {kind}() needs sigma > 0, got {nums[1]:g}")
    if kind.startswith("q") and nums[2] <= 0:
        raise SweepConfigError(f"parameter {name!r}: {kind}() needs q > 0, got {nums[2]:g}")
    return [kind, list(args)]


def _quantize(v: float, q: float) -> float:
    return round(v / q) * q


def draw(expr: list[Any], rng: random.Random) -> Any:
    """One value of a checked expression, drawn with ``rng``."""
    kind, args = expr
    if kind == "choice":
        return rng.choice(args[0])
    if kind == "randint":
        return rng.randrange(args[0])
    a, b = float(args[0]), float(args[1])
    if kind in ("uniform", "quniform"):
        v = rng.uniform(a, b)
    elif kind in ("loguniform", "qloguniform"):
        v = math.exp(rng.uniform(a, b))
    elif kind in ("normal", "qnormal"):
        v = rng.gauss(a, b)
    else:  # lognormal, qlognormal
        v = math.exp(rng.gauss(a, b))
    return _quantize(v, float(args[2])) if kind.startswith("q") else v


class ParameterSampling:
    """Base of the three samplings: a checked parameter space, v1's ``to_json()`` form."""

    SAMPLING_NAME = ""
    #: Expression kinds this sampling allows (None: all).
    ALLOWED: tuple[str, ...] | None = None

    def __init__(self, parameter_space: dict[str, Any], properties: dict[str, Any] | None = None):
        if not isinstance(parameter_space, dict) or not parameter_space:
            raise SweepConfigError(
                "the parameter space is a non-empty dict of name -> expression, e.g. "
                "{'--lr': uniform(0.001, 0.1)}"
            )
        space = {}
        for name, expr in parameter_space.items():
            checked = check_expression(name, expr)
            if self.ALLOWED is not None and checked[0] not in self.ALLOWED:
                raise SweepConfigError(self._not_allowed(name, checked[0]))
            space[name] = checked
        # Names become '--name' arguments: two spellings of one name would pass it twice.
        stripped = [n.lstrip("-") for n in space]
        if len(set(stripped)) != len(stripped):
            raise SweepConfigError(
                "the parameter space names one parameter twice (with and without dashes)"
            )
        self._parameter_space = space
        self._properties = dict(properties or {})

    def _not_allowed(self, name: str, kind: str) -> str:
        return f"{type(self).__name__} takes only {', '.join(self.ALLOWED or ())}; parameter {name!r} is {kind}()"

    def to_json(self) -> dict[str, Any]:
        """v1's serialized form: ``{'name': ..., 'parameter_space': {...}, 'properties': ...}``."""
        return {
            "name": self.SAMPLING_NAME,
            "parameter_space": {k: [v[0], list(v[1])] for k, v in self._parameter_space.items()},
            "properties": dict(self._properties),
        }

    def check_policy(self, policy: Any) -> None:
        """Raise :class:`SweepConfigError` when this sampling cannot run with ``policy``."""


class RandomParameterSampling(ParameterSampling):
    """Each trial draws every parameter independently. ``properties={'seed': N}`` (or v1's
    ``rseed``) fixes the draws; without it a seed is chosen and recorded on the sweep."""

    SAMPLING_NAME = "RANDOM"

    def __init__(
        self,
        parameter_space: dict[str, Any],
        properties: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(parameter_space, properties)
        if seed is not None:
            self._properties["seed"] = seed
        s = self._properties.get("seed", self._properties.get("rseed"))
        if s is not None and (isinstance(s, bool) or not isinstance(s, int)):
            raise SweepConfigError(f"the sampling seed is a whole number, got {s!r}")


class GridParameterSampling(ParameterSampling):
    """Every combination of the ``choice`` options, in the order given (the last parameter
    varying fastest); the sweep runs at most ``max_total_runs`` of them."""

    SAMPLING_NAME = "GRID"
    ALLOWED = ("choice",)

    def _not_allowed(self, name: str, kind: str) -> str:
        return (
            f"a grid enumerates choices only, but parameter {name!r} is {kind}(), a "
            "continuous or random range; use choice(...) or RandomParameterSampling"
        )

    def size(self) -> int:
        """How many combinations the grid has."""
        return math.prod(len(e[1][0]) for e in self._parameter_space.values())


class BayesianParameterSampling(ParameterSampling):
    """Each trial's values are proposed from the finished trials' results (Optuna's TPE; install
    the extra: ``pip install 'mlws[sweeps]'``). As in v1: ``choice``, ``uniform`` and
    ``quniform`` only, and no early-termination policy."""

    SAMPLING_NAME = "BayesianOptimization"
    ALLOWED = ("choice", "uniform", "quniform")

    def __init__(
        self, parameter_space: dict[str, Any], properties: dict[str, Any] | None = None
    ) -> None:
        require_optuna()
        super().__init__(parameter_space, properties)

    def check_policy(self, policy: Any) -> None:
        """Bayesian sampling learns from whole trials: a policy that stops them is refused."""
        if policy is not None and getattr(policy, "POLICY_NAME", None) != "Default":
            raise SweepConfigError(
                "BayesianParameterSampling takes no early-termination policy (it learns from "
                f"finished trials); leave policy=None, got {type(policy).__name__}"
            )


def require_optuna() -> Any:
    """The ``optuna`` module. :raises SweepConfigError: it is not installed (names the extra)."""
    try:
        import optuna
    except ImportError:
        raise SweepConfigError(
            "BayesianParameterSampling needs Optuna, which is not installed here; "
            "install the extra: pip install 'mlws[sweeps]'"
        ) from None
    return optuna


def from_json(data: dict[str, Any]) -> ParameterSampling:
    """The sampling saved by ``to_json()``."""
    cls = {c.SAMPLING_NAME: c for c in _SAMPLINGS}[data["name"]]
    return cls(data["parameter_space"], data.get("properties"))


_SAMPLINGS = (RandomParameterSampling, GridParameterSampling, BayesianParameterSampling)


def grid_values(space: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of a grid's choices, the last parameter varying fastest."""
    names = list(space)
    for combo in itertools.product(*(space[n][1][0] for n in names)):
        yield dict(zip(names, combo, strict=True))


#: How many times Random draws again after drawing a point seen already, before it lists what
#: is left of a finite space (:func:`finite_points`).
REDRAWS = 200
#: The largest finite space :func:`finite_points` lists (beyond, a repeat after ``REDRAWS``
#: draws means the space is as good as used up).
MAX_LISTED = 100_000
#: Bayesian: how many repeated points in a row TPE may propose before the points of a finite
#: space not run yet are listed (each ask costs milliseconds; a repeat told back as such makes
#: TPE move away from it, so a few asks are enough unless the space is nearly used up).
BAYES_REASKS = 20


def finite_points(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of a space of ``choice`` and ``randint`` expressions only (in grid order),
    or ``[]`` for a space with a continuous expression or over :data:`MAX_LISTED` points."""
    values: list[list[Any]] = []
    for kind, args in space.values():
        if kind == "choice":
            values.append(list(args[0]))
        elif kind == "randint":
            values.append(list(range(int(args[0]))) if int(args[0]) <= MAX_LISTED else [])
        else:
            return []
    if not values or math.prod(len(v) for v in values) > MAX_LISTED:
        return []
    names = list(space)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def point_key(params: dict[str, Any]) -> str:
    """One hyperparameter set as a comparable key (names and values, canonical JSON)."""
    import json

    return json.dumps(params, sort_keys=True, separators=(",", ":"))


class Sampler:
    """Draws the sweep's hyperparameter sets one at a time (in the controller).

    ``suggest()`` returns the next set or None when the space is exhausted (a grid);
    ``observe(index, value)`` tells the sampler a finished trial's primary metric (Bayesian
    learns from it; the others ignore it). ``prior``: the finished trials of the sweeps this
    one resumes, ``(hyperparameters, best primary metric or None)``; those over other
    parameter names than this space's are left out."""

    def __init__(
        self,
        sampling: dict[str, Any],
        seed: int,
        maximize: bool,
        prior: list[tuple[dict[str, Any], float | None]] | None = None,
    ) -> None:
        self.name = sampling["name"]
        self.space: dict[str, list[Any]] = sampling["parameter_space"]
        self.rng = random.Random(seed)
        self._grid = grid_values(self.space) if self.name == "GRID" else None
        self._study: Any = None
        self._asked: dict[int, Any] = {}
        self.prior = [(p, v) for p, v in prior or () if set(p) == set(self.space)]
        self._done = {point_key(p) for p, _ in self.prior}
        #: Bayesian: the primary metric value of each point run so far, by :func:`point_key`.
        self._values: dict[str, float] = {
            point_key(p): v for p, v in self.prior if v is not None and math.isfinite(v)
        }
        if self.name == "BayesianOptimization":
            optuna = require_optuna()
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._study = optuna.create_study(
                direction="maximize" if maximize else "minimize",
                sampler=optuna.samplers.TPESampler(seed=seed),
            )
            self._seed_study()

    def _seed_study(self) -> None:
        """Warm start: the earlier sweeps' trials that logged a value, as finished trials of
        the study (a value outside this space's distributions is left out)."""
        import optuna

        dists = self._distributions()
        for params, value in self.prior:
            if value is None or not math.isfinite(value):
                continue
            try:
                self._study.add_trial(
                    optuna.trial.create_trial(params=params, distributions=dists, value=value)
                )
            except ValueError:
                continue

    def suggest(self, index: int) -> dict[str, Any] | None:
        """The hyperparameters of trial ``index``, or None when there are no more."""
        if self._grid is not None:
            for point in self._grid:
                if point_key(point) not in self._done:
                    return point
            return None
        if self._study is not None:
            return self._ask(index)
        for _ in range(REDRAWS):
            point = {n: draw(e, self.rng) for n, e in self.space.items()}
            if self._take(point):
                return point
        # Every draw was a point seen already: a finite space is nearly or wholly used up, so
        # what is left of it is listed and one of those taken; none left ends the sweep.
        left = [p for p in finite_points(self.space) if point_key(p) not in self._done]
        if left:
            point = self.rng.choice(left)
            self._take(point)
            return point
        return None

    def _take(self, point: dict[str, Any]) -> bool:
        """Record ``point`` as proposed, unless it was proposed (or run by an earlier sweep)
        already: Random never proposes one point twice."""
        key = point_key(point)
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        dists: dict[str, Any] = {}
        for n, (kind, args) in self.space.items():
            if kind == "choice":
                dists[n] = CategoricalDistribution(args[0])
            else:
                dists[n] = FloatDistribution(float(args[0]), float(args[1]))
        return dists

    def _ask(self, index: int) -> dict[str, Any] | None:
        """TPE's next point, never one proposed (or run by a resumed sweep) before: v1 runs a
        point once. A repeat is told back to the study -- with its value when that point has
        one, else as failed -- and TPE asked again; after :data:`BAYES_REASKS` repeats the
        points of a finite space not run yet are listed and one of them enqueued (none left:
        None, the sweep ends)."""
        import optuna

        dists = self._distributions()
        for _ in range(BAYES_REASKS):
            trial = self._study.ask(dists)
            point = self._point(trial)
            if self._take(point):
                self._asked[index] = trial
                return point
            value = self._values.get(point_key(point))
            if value is None:
                self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self._study.tell(trial, value)
        left = [p for p in finite_points(self.space) if point_key(p) not in self._done]
        if not left:
            return None
        point = self.rng.choice(left)
        self._study.enqueue_trial(point)
        self._asked[index] = self._study.ask(dists)
        self._take(point)
        return point

    def _point(self, trial: Any) -> dict[str, Any]:
        """The hyperparameters of an asked Optuna trial (``quniform`` values quantized)."""
        out = {}
        for n, (kind, args) in self.space.items():
            v = trial.params[n]
            out[n] = _quantize(v, float(args[2])) if kind == "quniform" else v
        return out

    def observe(self, index: int, value: float | None) -> None:
        """Trial ``index`` ended with best primary metric ``value`` (None: it logged none)."""
        trial = self._asked.pop(index, None)
        if trial is None:
            return
        import optuna

        if value is None or not math.isfinite(value):
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._values[point_key(self._point(trial))] = value
            self._study.tell(trial, value)


def parse_expression(text: str) -> tuple[str, list[Any]]:
    """``'lr=uniform(0.001, 0.1)'`` as ``('lr', ['uniform', [0.001, 0.1]])`` (the command
    line's ``--param``); arguments are Python literals (numbers, quoted strings).

    :raises SweepConfigError: not ``NAME=KIND(ARGS)``, an unknown kind, bad arguments.
    """
    import ast
    import re

    m = re.fullmatch(r"\s*([-\w.]+)\s*=\s*(\w+)\s*\((.*)\)\s*", text or "", re.S)
    if not m:
        raise SweepConfigError(
            f"--param {text!r}: expected NAME=EXPRESSION(ARGS), e.g. 'lr=uniform(0.001,0.1)' or "
            "'batch=choice(16,32)'"
        )
    name, kind, inner = m.groups()
    if kind not in _ARITY:
        raise SweepConfigError(
            f"--param {text!r}: unknown parameter expression {kind!r}; use one of {_KNOWN}"
        )
    try:
        args = ast.literal_eval(f"[{inner}]")
    except (ValueError, SyntaxError):
        raise SweepConfigError(
            f"--param {text!r}: the arguments must be numbers or quoted strings"
        ) from None
    expr = globals()[kind](*args) if kind == "choice" else [kind, args]
    return name, check_expression(name, expr)
