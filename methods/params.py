"""Typed method parameters: every value a method receives is parsed and range-checked first.

A method's `defaults` give each parameter its type (bool, int, float or str); its `rules` may
add a range, a set of choices, or words a number may be replaced by (`gamma`: a float or
"scale"). Values from the command line arrive as text, so "False" must become False (a
non-empty string is truthy) and "abc" for a float must be refused before any data is loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchmark.errors import UsageError

TRUE_WORDS = {"true", "yes", "on", "1"}
FALSE_WORDS = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Rule:
    """Constraints on one parameter beyond its type (bounds are inclusive unless `gt`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] = ()
    words: tuple[str, ...] = ()  # text values allowed in place of a number
    pattern: str = ""  # a regular expression a text value must match in full
    integer: bool = False  # a word default stands for a whole number, not a float

    def describe(self, kind: str) -> str:
        parts = [kind]
        if self.gt is not None:
            parts.append(f"> {self.gt:g}")
        if self.ge is not None:
            parts.append(f">= {self.ge:g}")
        if self.le is not None:
            parts.append(f"<= {self.le:g}")
        if self.choices:
            parts = [f"one of {', '.join(map(str, self.choices))}"]
        if self.pattern:
            parts.append(f"matching {self.pattern}")
        text = " ".join(parts)
        if self.words:
            text += f", or {' / '.join(self.words)}"
        return text


NO_RULE = Rule()


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    return "str"


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError


def _as_number(value: Any, kind: str) -> int | float:
    if isinstance(value, bool):
        raise ValueError
    number = float(value) if not isinstance(value, int | float) else value
    if not math.isfinite(number):
        raise ValueError
    if kind == "int":
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        return int(number)
    return float(number)


def coerce(method: str, name: str, value: Any, default: Any, rule: Rule = NO_RULE) -> Any:
    """`value` parsed to the type of `default` and checked against `rule`, or a UsageError."""
    kind = _kind(default)
    numeric = kind in ("int", "float") or (kind == "str" and rule.words and default in rule.words)
    if numeric and kind == "str":
        # a word default (gamma="scale") stands for a float parameter, unless the rule says int
        kind = "int" if rule.integer else "float"
    expected = rule.describe(kind)
    problem = UsageError(
        f"Method {method!r}: parameter {name}={value!r} must be {expected}"
        f" (default {default!r}); e.g. --set {name}={default}."
    )
    if isinstance(value, str) and value.strip() in rule.words:
        return value.strip()
    try:
        if kind == "bool":
            parsed: Any = _as_bool(value)
        elif kind in ("int", "float"):
            parsed = _as_number(value, kind)
        else:
            if not isinstance(value, str):
                raise ValueError
            parsed = value.strip()
            if rule.pattern and not re.fullmatch(rule.pattern, parsed):
                raise ValueError
    except (TypeError, ValueError):
        raise problem from None
    if rule.choices and parsed not in rule.choices:
        raise problem
    if kind in ("int", "float"):
        if rule.gt is not None and not parsed > rule.gt:
            raise problem
        if rule.ge is not None and not parsed >= rule.ge:
            raise problem
        if rule.le is not None and not parsed <= rule.le:
            raise problem
    return parsed


def coerce_all(
    method: str, params: Mapping[str, Any], defaults: Mapping[str, Any], rules: Mapping[str, Rule]
) -> dict[str, Any]:
    """Every parameter typed and checked; unknown names are refused, listing the known ones."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise UsageError(
            f"Unknown parameter(s) {', '.join(unknown)} for method {method!r}."
            f" Known: {', '.join(sorted(defaults)) or 'none'}."
        )
    merged = {**defaults, **params}
    return {
        name: coerce(method, name, value, defaults[name], rules.get(name, NO_RULE))
        for name, value in merged.items()
    }


# Constraints several methods' parameters share; each method declares its own `rules` with them.
POSITIVE = Rule(gt=0)
NON_NEGATIVE = Rule(ge=0)
AT_LEAST_ONE = Rule(ge=1)
FRACTION = Rule(ge=0, le=0.9)
