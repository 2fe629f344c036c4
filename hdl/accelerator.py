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


def _tile_check(component, what: str, links: dict[str, int]):
    """The unit check of a tile kind: its table by ``component``'s rules, without the
    placed keys. The link rules are the contract's, checked with the description's real
    ``flit_width`` and ``max_packet``; here ``links`` stand in (SA: the tile's defaults, the
    narrowest link, on which every result beat that fits a wider one fits too; PiM and SFU:
    the widest, so only the tile's own rules apply)."""
    def check(given: dict[str, Any]) -> dict[str, Any]:
        for name in PLACED:
            if name in given:
                raise ParamError(f"{name} is the description's, not {what} parameter")
        p = component.validate_params({**given, "index": 1, "control": 0, **links})
        return {k: v for k, v in p.items() if k not in PLACED}
    return check


_WIDEST = {"flit_width": 256, "max_packet": 1024}

#: The validation of each tile kind's unit parameters (defaults filled in).
UNIT_CHECKS = {TileKind.SA: _tile_check(SaTile, "an SA tile", {}),
               TileKind.PIM: _tile_check(PimNetTile, "a PiM tile", _WIDEST),
               TileKind.SFU: _tile_check(SfuTile, "an SFU tile", _WIDEST)}


def describe(table: dict[str, Any]) -> Description:
    """The checked :class:`Description` of an ``[accelerator]`` table: structure, planes,
    link widths and every unit's own parameter rules, all problems reported at once."""
    return parse_description(table, UNIT_CHECKS)
