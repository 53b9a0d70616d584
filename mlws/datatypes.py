"""Column types of tabular datasets (Azure ML v1's ``DataType``) and converting columns to them.

``set_column_types={"age": DataType.to_long()}`` asks for a column as a type; the conversion
works on pyarrow columns, vectorized. A value that does not convert is an *error value*: read as
null (``on_error="null"``, v1's default) or an error that names the column, the value and its
row. A conversion is stored in a dataset's definition as a small dict (``as_dict``), so a
registered dataset converts the same way when it is read again.

pyarrow and pandas are imported inside the functions that convert: ``import mlws`` stays light.
"""

from __future__ import annotations

import functools
from typing import Any

from .errors import UserErrorException

_KINDS = ("string", "long", "float", "bool", "datetime")
_NAMES = {
    "string": "string",
    "str": "string",
    "long": "long",
    "int": "long",
    "integer": "long",
    "float": "float",
    "double": "float",
    "bool": "bool",
    "boolean": "bool",
    "datetime": "datetime",
    "date": "datetime",
}
_DEFAULT_TRUE = ["True", "true", "TRUE", "1"]
_DEFAULT_FALSE = ["False", "false", "FALSE", "0"]


class DataType:
    """A column type for ``set_column_types`` (v1 shape): ``DataType.to_string()``,
    ``to_long()``, ``to_float()``, ``to_bool()``, ``to_datetime(formats)``."""

    def __init__(self, kind: str, **args: Any) -> None:
        if kind not in _KINDS:
            raise UserErrorException(f"unknown column type {kind!r}; one of {', '.join(_KINDS)}")
        self.kind = kind
        self.args = args

    @staticmethod
    def to_string() -> DataType:
        """Text, as read (v1's ``DataType.to_string()``); every value converts."""
        return DataType("string")

    @staticmethod
    def to_long() -> DataType:
        """64-bit integers; text like ``"1.5"`` or ``"x"`` is an error value."""
        return DataType("long")

    @staticmethod
    def to_float(decimal_mark: str = ".") -> DataType:
        """64-bit floats. ``decimal_mark``: ``"."`` (or v1's ``"dot"``) or ``","`` (``"comma"``)."""
        mark = {"dot": ".", "comma": ","}.get(decimal_mark, decimal_mark)
        if mark not in (".", ","):
            raise UserErrorException(
                f"decimal_mark is '.' or ',' ('dot' or 'comma'); got {decimal_mark!r}"
            )
        return DataType("float", decimal_mark=mark)

    @staticmethod
    def to_bool(
        true_values: list[str] | None = None,
        false_values: list[str] | None = None,
        mismatch_as: str = "error",
    ) -> DataType:
        """Booleans from text in ``true_values`` / ``false_values`` (default ``True``/``true``/
        ``TRUE``/``1`` and the like) or from 0/1 numbers. Other text is an error value, or
        ``True``/``False`` with ``mismatch_as="true"``/``"false"``."""
        values = []
        for label, given, default in (
            ("true_values", true_values, _DEFAULT_TRUE),
            ("false_values", false_values, _DEFAULT_FALSE),
        ):
            if given is None:
                given = default
            if isinstance(given, str) or not all(isinstance(v, str) for v in given):
                raise UserErrorException(f"{label} is a list of strings; got {given!r}")
            values.append(list(given))
        if mismatch_as not in ("error", "true", "false"):
            raise UserErrorException(
                f"mismatch_as is 'error', 'true' or 'false'; got {mismatch_as!r}"
            )
        return DataType(
            "bool", true_values=values[0], false_values=values[1], mismatch_as=mismatch_as
        )

    @staticmethod
    def to_datetime(formats: str | list[str] | None = None) -> DataType:
        """Datetimes from text in one of ``formats`` (``strftime`` codes, tried in order, e.g.
        ``"%d/%m/%Y %H:%M"``); without formats, ISO 8601 (``2024-01-31``, ``2024-01-31T08:00:00``)."""
        if isinstance(formats, str):
            formats = [formats]
        if formats is not None and (
            not formats or not all(isinstance(f, str) and f for f in formats)
        ):
            raise UserErrorException(
                f"formats is a strftime format or a list of them, e.g. ['%Y-%m-%d']; got {formats!r}"
            )
        return DataType("datetime", formats=list(formats) if formats else None)

    @staticmethod
    def from_name(name: str) -> DataType:
        """``"long"``, ``"float"``, ``"bool"``, ``"string"``, ``"datetime"`` (and ``int``,
        ``double``, ``str``, ...): the CLI's ``--column-type COL=long``."""
        kind = _NAMES.get(str(name).lower())
        if kind is None:
            raise UserErrorException(f"unknown column type {name!r}; one of {', '.join(_KINDS)}")
        return getattr(DataType, f"to_{kind}")()

    # -- stored form -------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """The form stored in a dataset's definition: ``{"type": kind, ...args}``, unset arguments
        left out."""
        return {"type": self.kind, **{k: v for k, v in self.args.items() if v is not None}}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> DataType:
        """The type stored by :meth:`as_dict`.

        :raises UserErrorException: an unknown ``type``.
        """
        args = {k: v for k, v in data.items() if k != "type"}
        return DataType(data["type"], **args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataType) and other.as_dict() == self.as_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if v is not None)
        return f"DataType.to_{self.kind}({args})"


def check_column_types(value: Any) -> dict[str, dict[str, Any]]:
    """``set_column_types`` as stored in a definition: ``{column: DataType.as_dict()}``.

    :raises UserErrorException: not a dict of column names to ``DataType``.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserErrorException(
            f"set_column_types maps column names to types, e.g. {{'age': DataType.to_long()}};"
            f" got {value!r}"
        )
    out = {}
    for col, dt in value.items():
        if not isinstance(col, str) or not isinstance(dt, DataType):
            raise UserErrorException(
                f"set_column_types maps column names to DataType.to_long(), .to_float(), ...;"
                f" got {col!r}: {dt!r}"
            )
        out[col] = dt.as_dict()
    return out


# -- converting pyarrow columns --------------------------------------------------------------
_INT = r"^[+-]?[0-9]+$"
_FLOAT = r"(?i)^(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan))$"


def convert(col: Any, spec: dict[str, Any]) -> Any:
    """``col`` (a pyarrow array) as the type ``spec`` (a ``DataType.as_dict()``): values that do
    not convert become null (the caller compares nulls before and after to find them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = spec["type"]
    t = col.type
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    if kind == "string":
        return col if text else pc.cast(col, pa.string())
    if kind == "long":
        if text:
            s = pc.utf8_trim_whitespace(col)
            ok = pc.match_substring_regex(s, _INT)
            s = pc.if_else(ok, s, pa.scalar(None, pa.string()))
            try:
                return pc.cast(s, pa.int64())
            except pa.ArrowInvalid:  # a value past int64: find it value by value
                return pa.array([_int_or_none(v) for v in s.to_pylist()], pa.int64())
        if pa.types.is_integer(t) or pa.types.is_boolean(t):
            return pc.cast(col, pa.int64(), safe=False)
        if pa.types.is_floating(t):
            ok = pc.and_(
                pc.equal(pc.floor(col), col),
                pc.and_(pc.greater_equal(col, -(2.0**63)), pc.less(col, 2.0**63)),
            )
            return pc.cast(pc.if_else(ok, col, pa.scalar(None, t)), pa.int64(), safe=False)
        return pa.nulls(len(col), pa.int64())
    if kind == "float":
        if text:
            s = pc.utf8_trim_whitespace(col)
            if spec.get("decimal_mark") == ",":
                s = pc.replace_substring(s, ",", ".")
            ok = pc.match_substring_regex(s, _FLOAT)
            return pc.cast(pc.if_else(ok, s, pa.scalar(None, pa.string())), pa.float64())
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return pc.cast(col, pa.float64())
        return pa.nulls(len(col), pa.float64())
    if kind == "bool":
        if pa.types.is_boolean(t):
            return col
        if text:
            s = pc.utf8_trim_whitespace(col)
            is_true = pc.is_in(s, value_set=pa.array(spec["true_values"], pa.string()))
            is_false = pc.is_in(s, value_set=pa.array(spec["false_values"], pa.string()))
            other = {"true": True, "false": False}.get(spec.get("mismatch_as", "error"))
            out = pc.if_else(is_true, True, pc.if_else(is_false, False, other))
            return pc.if_else(pc.is_null(col), pa.scalar(None, pa.bool_()), out)
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return pc.if_else(
                pc.equal(col, 1), True, pc.if_else(pc.equal(col, 0), False, None)
            ).cast(pa.bool_())
        return pa.nulls(len(col), pa.bool_())
    if kind == "datetime":
        if pa.types.is_timestamp(t):
            return col
        if pa.types.is_date(t):
            return pc.cast(col, pa.timestamp("s"))
        if text:
            return _parse_datetimes(col, spec.get("formats"))
        return pa.nulls(len(col), pa.timestamp("us"))
    raise UserErrorException(f"unknown column type {kind!r}")


def _int_or_none(v: str | None) -> int | None:
    if v is None:
        return None
    n = int(v)
    return n if -(2**63) <= n < 2**63 else None


def _parse_datetimes(col: Any, formats: list[str] | None) -> Any:
    """Text to timestamps through pandas, whose parser knows ``%f``, ISO 8601 with offsets and
    the rest of strftime (pyarrow's ``strptime`` is the C library's)."""
    import pandas as pd
    import pyarrow as pa

    s = pd.Series(col.to_pandas(), dtype=object)
    out = None
    for fmt in formats or ["ISO8601"]:
        try:
            parsed = pd.to_datetime(s, format=fmt, errors="coerce")
        except ValueError:  # offsets that differ between values: one column needs one zone
            parsed = pd.to_datetime(s, format=fmt, errors="coerce", utc=True)
        out = parsed if out is None else out.fillna(parsed)
    assert out is not None
    return pa.Array.from_pandas(out)


def first_bad(before: Any, after: Any) -> int | None:
    """The index of the first value that was there ``before`` and is null ``after``."""
    import pyarrow.compute as pc

    bad = pc.and_(pc.is_valid(before), pc.is_null(after))
    if not pc.any(bad).as_py():
        return None
    return int(pc.index(bad, True).as_py())


@functools.lru_cache(maxsize=1)
def pandas_datetime_unit() -> str:
    """The resolution pandas itself gives parsed datetimes ("ns" in pandas 2, "us" in 3)."""
    import pandas as pd

    return str(pd.to_datetime(["2000-01-01"]).unit)


_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def out_of_pandas_range(col: Any) -> Any:
    """A mask of the timestamps outside what ``pandas.Timestamp`` holds (1677-09-21 to
    2262-04-11, nanoseconds in an int64): v1's "out of range" datetimes. None if none are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    per = _UNITS[col.type.unit]
    if per == 1:
        return None
    # int64 nanoseconds, less the one value that is NaT: [-(2**63 - 1), 2**63 - 1]
    hi = (2**63 - 1) // per
    lo = -hi
    ints = pc.cast(col, pa.int64())
    mask = pc.or_(pc.less(ints, lo), pc.greater(ints, hi))
    return mask if pc.any(mask).as_py() else None


def finer_unit(a: str, b: str) -> str:
    """The finer of two timestamp units (``"s"``, ``"ms"``, ``"us"``, ``"ns"``): casting to it loses
    no digit."""
    return a if _UNITS[a] <= _UNITS[b] else b
