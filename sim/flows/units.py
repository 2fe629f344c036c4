"""The registry of generator units: what ``heterotron list/generate/lint/sim`` know about.

Adding a unit means adding one :class:`Unit` to :data:`UNITS` (see ``docs/adding-a-unit.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amaranth.lib import wiring

from heterotron.hdl.contract.params import Param, ParamError, check, defaults, parse_value
from heterotron.hdl.gelu import Gelu
from heterotron.hdl.gemm import GemmEngine
from heterotron.hdl.layernorm import LayerNorm
from heterotron.hdl.mesh import Mesh
from heterotron.hdl.pim import PimTile
from heterotron.hdl.requantizer import Requantizer
from heterotron.hdl.residual import ResidualAdd
from heterotron.hdl.router import Router
from heterotron.hdl.softmax import Softmax
from heterotron.hdl.systolic import SystolicArray

__all__ = ["Unit", "UNITS", "get_unit", "UnitError"]


class UnitError(ValueError):
    """An unknown unit name."""


@dataclass(frozen=True)
class Unit:
    """A generator unit: its component class, its cocotb testbench module, a one-line summary."""

    name: str
    component: Callable[..., wiring.Component]
    testbench: str
    summary: str

    @property
    def params(self) -> tuple[Param, ...]:
        return self.component.PARAMS

    def defaults(self) -> dict[str, Any]:
        return defaults(self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        valid = ", ".join(p.name for p in self.params)
        raise ParamError(f"{self.name} has no parameter {name!r}; valid: {valid}")

    def resolve(self, config: dict[str, Any] | None = None,
                overrides: dict[str, str] | None = None) -> dict[str, Any]:
        """Defaults, then a configuration section (typed values), then ``--param`` strings."""
        given: dict[str, Any] = {}
        for name, value in (config or {}).items():
            self.param(name)
            given[name] = value
        for name, text in (overrides or {}).items():
            given[name] = parse_value(self.param(name), text)
        return defaults(self.params, given)

    def validate(self, params: dict[str, Any]) -> None:
        """Raise :class:`ParamError` for a bad parameter or combination, as construction
        would (the component's :meth:`~heterotron.hdl.contract.params.Parameterised.validate_params`
        where it has one)."""
        validate = getattr(self.component, "validate_params", None)
        if validate is None:
            check(self.params, **params)
        else:
            validate(params)

    def build(self, params: dict[str, Any]) -> wiring.Component:
        """Construct the component; raises :class:`ParamError` on a bad parameter."""
        return self.component(**params)


UNITS: dict[str, Unit] = {
    u.name: u
    for u in [
        Unit(
            name="requantizer",
            component=Requantizer,
            testbench="heterotron.tb.requantizer",
            summary="int32 -> int8 by a run-time dyadic scale per channel, optional residual add",
        ),
        Unit(
            name="systolic",
            component=SystolicArray,
            testbench="heterotron.tb.systolic",
            summary="rows x cols integer MAC array, output- or weight-stationary, skew inside",
        ),
        Unit(
            name="gemm",
            component=GemmEngine,
            testbench="heterotron.tb.gemm",
            summary="any-size GEMM over the systolic array from on-chip buffers, transposes",
        ),
        Unit(
            name="softmax",
            component=Softmax,
            testbench="heterotron.tb.softmax",
            summary="row-wise integer Softmax (i-exp; ibert divider or division-free reciprocal)",
        ),
        Unit(
            name="gelu",
            component=Gelu,
            testbench="heterotron.tb.gelu",
            summary="integer GELU (i-GELU) with run-time requantisation, fully pipelined",
        ),
        Unit(
            name="layernorm",
            component=LayerNorm,
            testbench="heterotron.tb.layernorm",
            summary="integer LayerNorm: mean, variance, exact isqrt, gamma/beta, requantisation",
        ),
        Unit(
            name="residual",
            component=ResidualAdd,
            testbench="heterotron.tb.residual",
            summary="branch + residual, each by its own run-time scale, saturated",
        ),
        Unit(
            name="pim",
            component=PimTile,
            testbench="heterotron.tb.pim",
            summary="analog PiM crossbar: bit-sliced weights, bit-serial inputs, low-ENOB ADC "
                    "with noise and faults, zero-plane skipping",
        ),
        Unit(
            name="router",
            component=Router,
            testbench="heterotron.tb.router",
            summary="one NoC router: input buffers, dimension-order routing, wormhole, "
                    "round-robin output arbitration",
        ),
        Unit(
            name="mesh",
            component=Mesh,
            testbench="heterotron.tb.mesh",
            summary="2D/3D mesh NoC of routers with network interfaces (stream <-> packets), "
                    "deadlock check at construction",
        ),
    ]
}


def get_unit(name: str) -> Unit:
    try:
        return UNITS[name]
    except KeyError:
        raise UnitError(f"unknown unit {name!r}; known units: {', '.join(UNITS)}") from None
