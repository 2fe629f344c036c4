"""The accelerator's top level, from one description (``[accelerator]``, see
:mod:`heterotron.hdl.contract.accel`).

This module checks a description with the units' own parameter rules (the contract knows the
structure, the components know their parameters); the top level that builds it is
:class:`heterotron.hdl.top.Accelerator`.
"""

from __future__ import annotations

from typing import Any

from heterotron.hdl.contract.accel import Description, TileKind, parse_description
from heterotron.hdl.gemm import GemmEngine

__all__ = ["UNIT_CHECKS", "describe"]

#: The validation of each tile kind's unit parameters (defaults filled in).
UNIT_CHECKS = {TileKind.SA: GemmEngine.validate_params}


def describe(table: dict[str, Any]) -> Description:
    """The checked :class:`Description` of an ``[accelerator]`` table: structure, planes,
    link widths and every unit's own parameter rules, all problems reported at once."""
    return parse_description(table, UNIT_CHECKS)
