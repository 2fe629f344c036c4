"""The accelerator's top level, from one description (``[accelerator]``, see
:mod:`heterotron.hdl.contract.accel`).

This module checks a description with the units' own parameter rules (the contract knows the
structure, the components know their parameters); the top level that builds it is
:class:`heterotron.hdl.top.Accelerator`.
"""

from __future__ import annotations

from typing import Any

from heterotron.hdl.contract.accel import Description, TileKind, parse_description
from heterotron.hdl.contract.params import ParamError
from heterotron.hdl.tiles.pim import PimNetTile
from heterotron.hdl.tiles.sa import SaTile
from heterotron.hdl.tiles.sfu import SfuTile

__all__ = ["UNIT_CHECKS", "describe"]

#: What the description sets for every tile (position, the links), not a tile's table.
PLACED = ("index", "control", "flit_width", "max_packet")


def _check_sa(given: dict[str, Any]) -> dict[str, Any]:
    """An SA tile's table: the engine's parameters and the tile's own (``result_depth``),
    by :class:`SaTile`'s rules. The link rules are the contract's, checked with the
    description's real ``flit_width`` and ``max_packet``; here the tile's defaults stand in
    (the narrowest link, on which every result beat that fits a wider one fits too)."""
    for name in PLACED:
        if name in given:
            raise ParamError(f"{name} is the description's, not an SA tile parameter")
    p = SaTile.validate_params({**given, "index": 1, "control": 0})
    return {k: v for k, v in p.items() if k not in PLACED}


def _check_pim(given: dict[str, Any]) -> dict[str, Any]:
    """A PiM tile's table: the crossbar's and the socket's parameters, by
    :class:`PimNetTile`'s rules (the link rules are the contract's, with the description's
    real ``flit_width`` and ``max_packet``; here the widest stand in)."""
    for name in PLACED:
        if name in given:
            raise ParamError(f"{name} is the description's, not a PiM tile parameter")
    p = PimNetTile.validate_params({**given, "index": 1, "control": 0, "flit_width": 256,
                                    "max_packet": 1024})
    return {k: v for k, v in p.items() if k not in PLACED}


def _check_sfu(given: dict[str, Any]) -> dict[str, Any]:
    """An SFU tile's table, by :class:`SfuTile`'s rules (links: as for PiM tiles)."""
    for name in PLACED:
        if name in given:
            raise ParamError(f"{name} is the description's, not an SFU tile parameter")
    p = SfuTile.validate_params({**given, "index": 1, "control": 0, "flit_width": 256,
                                 "max_packet": 1024})
    return {k: v for k, v in p.items() if k not in PLACED}


#: The validation of each tile kind's unit parameters (defaults filled in).
UNIT_CHECKS = {TileKind.SA: _check_sa, TileKind.PIM: _check_pim, TileKind.SFU: _check_sfu}


def describe(table: dict[str, Any]) -> Description:
    """The checked :class:`Description` of an ``[accelerator]`` table: structure, planes,
    link widths and every unit's own parameter rules, all problems reported at once."""
    return parse_description(table, UNIT_CHECKS)
