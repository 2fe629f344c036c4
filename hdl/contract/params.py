"""Generator parameters: one declaration per parameter, used for validation and by the CLI.

Every component declares its parameters as a tuple of :class:`Param`. The component's
``__init__`` calls :func:`check` on its keyword arguments, so a bad value is rejected at
construction with a message that names the parameter and its allowed range; the CLI uses the
same declarations to parse ``--param k=v`` strings and to list defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "ParamError", "Parameterised", "check", "parse_value", "defaults",
           "validating", "sample", "sample_valid", "inspect_only"]


class ParamError(ValueError):
    """A generator parameter is out of its allowed range or of the wrong type."""


@dataclass(frozen=True)
class Param:
    """One generator parameter.

    ``kind`` is ``int``, ``bool`` or ``str``. Integers have an inclusive range ``[lo, hi]``; a
    ``multiple_of`` names another parameter this one must be a multiple of. Strings take one of
    ``choices``. A parameter with
    ``follows`` set takes that parameter's value unless given explicitly (its ``default`` is
    then ``None``).
    """

    name: str
    kind: type
    default: Any
    doc: str
    lo: int | None = None
    hi: int | None = None
    multiple_of: str | None = None
    follows: str | None = None
    choices: tuple[str, ...] = ()

    def default_text(self) -> str:
        if self.follows:
            return f"= {self.follows}"
        return str(self.default).lower() if self.kind is bool else str(self.default)

    def allowed(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices)
        text = f"an integer in [{self.lo}, {self.hi}]"
        if self.multiple_of:
            text += f" and a multiple of {self.multiple_of}"
        return text

    def validate(self, value: Any, values: dict[str, Any]) -> Any:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ParamError(f"{self.name} must be true or false, not {value!r}")
            return value
        if self.kind is str:
            if value not in self.choices:
                raise ParamError(f"{self.name} must be {self.allowed()}, not {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"{self.name} must be {self.allowed()}, not {value!r}")
        if not self.lo <= value <= self.hi:
            raise ParamError(f"{self.name} must be {self.allowed()}, not {value}")
        if self.multiple_of is not None:
            base = values[self.multiple_of]
            if value % base != 0:
                raise ParamError(
                    f"{self.name} must be {self.allowed()} (= {base}), not {value}"
                )
        return value


def check(params: tuple[Param, ...], **values: Any) -> dict[str, Any]:
    """Validate ``values`` against ``params`` in declaration order; return them unchanged."""
    known = {p.name for p in params}
    for name in values:
        if name not in known:
            raise ParamError(f"unknown parameter {name!r}; valid: {', '.join(sorted(known))}")
    for p in params:
        p.validate(values[p.name], values)
    return values


def parse_value(param: Param, text: str) -> Any:
    """Turn the string a user typed (``--param k=v``) into the parameter's type."""
    if param.kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ParamError(f"{param.name} must be {param.allowed()}, not {text!r}")
    if param.kind is str:
        value = text.strip().lower()
        if value not in param.choices:
            raise ParamError(f"{param.name} must be {param.allowed()}, not {text!r}")
        return value
    try:
        return int(text, 0)
    except ValueError:
        raise ParamError(f"{param.name} must be {param.allowed()}, not {text!r}") from None


def defaults(params: tuple[Param, ...], given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter's value: ``given`` where present, else its default (or, for a parameter
    that ``follows`` another, that one's value)."""
    values = {p.name: p.default for p in params}
    values.update(given or {})
    for p in params:
        if p.follows and (given is None or p.name not in given):
            values[p.name] = values[p.follows]
    return values


def sample(params: tuple[Param, ...], rng, caps: dict[str, int] | None = None) -> dict[str, Any]:
    """A random valid parameter set (for sweeps that test "any valid parameters").

    ``rng`` is a ``numpy.random.Generator``; ``caps`` lowers the upper bound of chosen integer
    parameters (to keep simulations short). Each integer is its lower bound, its (capped) upper
    bound or uniform in between, with equal chance, so the edges come up often.
    """
    caps = caps or {}
    values: dict[str, Any] = {}
    for p in params:
        if p.kind is bool:
            values[p.name] = bool(rng.integers(0, 2))
            continue
        if p.kind is str:
            values[p.name] = str(rng.choice(p.choices))
            continue
        hi = min(p.hi, caps.get(p.name, p.hi))
        if p.multiple_of is not None:
            base = values[p.multiple_of]
            k = int(rng.choice([1, max(1, hi // base), rng.integers(1, max(1, hi // base) + 1)]))
            values[p.name] = base * k
        else:
            values[p.name] = int(rng.choice([p.lo, hi, rng.integers(p.lo, hi + 1)]))
    return values


@contextmanager
def validating(component) -> Iterator[None]:
    """Wrap a component's parameter checks: a component rejected at construction is never
    elaborated, so Amaranth's "created but never used" warning is silenced for it."""
    try:
        yield
    except ParamError:
        component._MustUse__silence = True
        raise


def inspect_only(component):
    """Mark ``component``, and the components it built for itself, as made only to be looked
    at (ports, shapes, validation): Amaranth then does not warn that they were never used."""
    for part in [component, *vars(component).values()]:
        if hasattr(part, "_MustUse__silence"):
            part._MustUse__silence = True
    return component


class Parameterised:
    """The one way a component holds its generator parameters.

    A component declares them once, in ``PARAMS`` (name, type, default, range, doc), puts the
    rules *between* parameters in :meth:`check_params`, and starts its ``__init__`` with
    ``p = self._take_params(given)``. It then has:

    * every default from ``PARAMS`` (a ``follows`` parameter takes the other's value), so no
      default is written twice;
    * one validation, :meth:`validate_params` (ranges, then :meth:`check_params`), which the
      unit catalogue runs too, so ``heterotron generate`` refuses exactly what construction
      refuses;
    * a read-only property per parameter (``component.lanes``) and :attr:`parameters`, the
      whole set as a dict.

    Derived quantities (widths, latencies) stay ordinary properties of the component.
    """

    PARAMS: tuple[Param, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for p in cls.__dict__.get("PARAMS", ()):
            if p.name not in cls.__dict__:
                setattr(cls, p.name, property(lambda self, _n=p.name: self._params[_n],
                                              doc=p.doc))

    @classmethod
    def check_params(cls, p: dict[str, Any]) -> None:
        """Raise :class:`ParamError` for a combination of in-range values the component cannot
        build (override; each parameter's own range is already checked)."""

    @classmethod
    def validate_params(cls, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every parameter's value (defaults filled in), validated: ranges, then the rules
        between parameters; raises :class:`ParamError` naming the parameter."""
        p = defaults(cls.PARAMS, given)
        check(cls.PARAMS, **p)
        cls.check_params(p)
        return p

    def _take_params(self, given: dict[str, Any]) -> dict[str, Any]:
        with validating(self):
            self._params = self.validate_params(given)
        return dict(self._params)

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._params)


def sample_valid(component_cls, rng, caps: dict[str, int] | None = None,
                 tries: int = 1000) -> dict[str, Any]:
    """A :func:`sample` of ``component_cls.PARAMS`` that the component also accepts, rules
    between parameters included (drawn again until construction succeeds)."""
    for _ in range(tries):
        params = sample(component_cls.PARAMS, rng, caps)
        try:
            inspect_only(component_cls(**params))
        except ParamError:
            continue
        return params
    raise ParamError(f"no valid {component_cls.__name__} parameters in {tries} draws")
