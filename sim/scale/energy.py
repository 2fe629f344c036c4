r"""The energy model of the architecture-scale model: action counts times per-action energies.

The performance model counts *actions* (:data:`ACTIONS`: a MAC, an SRAM bit read, an ADC
conversion, a bit moved one hop, ...) from the RTL's counters and from compiled programs; this
module prices them from one table, ``sim/data/energy.toml``, shipped with the package. Every
figure in it carries its source, its technology node and a note on how it was derived.

**Equations.** For counts :math:`n_a` at node :math:`N`,

.. math::

    E(N) = \sum_a n_a \, e_a(N), \qquad
    e_a(N) = \Big[\min_i e_{a,i}(N),\ \max_i e_{a,i}(N)\Big],

where :math:`i` runs over the table's entries for action :math:`a`, each converted to the
action's unit (a figure per 64-bit access is divided by 64) and scaled to :math:`N`:

.. math::

    e_{a,i}(N) = e_{a,i} \, \frac{F(N)}{F(N_i)}

for a logic-scaled action (:attr:`Action.scaled`), and :math:`e_{a,i}(N) = e_{a,i}` for the
others. :math:`F` is the relative energy of a node, :math:`F(n) = a_n V_n^2 + b_n V_n + c_n`:
Stillmaker and Baas's fitted energy polynomial (Integration, 2017) for node :math:`n` evaluated
at that node's supply :math:`V_n`, both given in the table's ``[scaling]`` section. Between the
table's nodes :math:`\log F` is interpolated linearly in :math:`\log n`; a node outside the
table (7 to 130 nm as shipped) is refused, never extrapolated.

An ADC conversion at an effective resolution ENOB costs

.. math::

    e_\mathrm{ADC}(\mathrm{ENOB}) = \mathrm{FOM}_W \, 2^{\mathrm{ENOB}}

for a Walden figure-of-merit entry (energy per conversion step, ``per = "conversion-step"``),
and :math:`e_0 \, 2^{\mathrm{ENOB} - \mathrm{ENOB}_0}` for a measured point :math:`e_0` taken at
:math:`\mathrm{ENOB}_0` (``per = "conversion"``, e.g. ISAAC's 8-bit SAR ADC, 1.67 pJ). Either way
the energy doubles per bit of ENOB; ENOB outside 1..16 is refused.

**What scales with the node.** Digital actions (integer arithmetic, SRAM, router hops) scale
with :math:`F`. Analog and off-die actions do not: ``adc_conversion`` (ADC energy follows the
converter's design, its figure of merit, far more than the logic node; the survey's best designs
span 7 to 28 nm), ``crossbar_row_read`` (set by the cell's conductance, the read voltage and the
array's wire capacitance), ``dram_bit`` (a separate DRAM die and its interface) and
``vertical_link_bit`` (a via's capacitance is set by its geometry). Their figures are used as
published at any node inside the table; the node is still checked, so one call has one meaning.
Router hops are scaled as logic although their links are wires, which scale less (DSENT's own
22 nm hop is 0.34 of its 45 nm hop where the logic factor is 0.24); the table holds DSENT runs at
both nodes, so the range at a node spans the two.

**Why ranges.** Each action's energy is a (low, high) pair, and a report carries both totals,
because the sources disagree and because one action covers designs of different sizes:
SRAM per bit from an 8 KB array to a 1 MB one (Horowitz's three array sizes), DRAM per bit
(Horowitz's 1.3-2.6 nJ per 64 bits against Han et al.'s 640 pJ per 32), an ADC from the survey's
state of the art to a typical recent design (Walden FOM 4.9 to 20.6 fJ/step, with ISAAC between),
a crossbar cell from its high- to its low-resistance state (NeuroSim V1.3's defaults), a router
hop with a 1 to 2 mm link at 45 and at 22 nm (DSENT), and a vertical link from a fine to a
coarse TSV at two data activities (CACTI-3DD). Integer arithmetic has one figure each
(Horowitz), so its range is a point.

Examples
--------
>>> from heterotron.sim.scale.energy import energy
>>> report = energy({"mac_int8": 1e6, "sram_read_bit": 16e6}, node_nm=45)
>>> report.low_j <= report.high_j
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from numbers import Real
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["Action", "ACTIONS", "ENOB_RANGE", "Entry", "ScalingNode", "NodeScaling",
           "EnergyTable", "ActionEnergy", "EnergyReport", "load_table", "default_table",
           "adc_energy", "energy"]


@dataclass(frozen=True)
class Action:
    """One countable action.

    Attributes
    ----------
    name : str
        The key used in counts and in the table's ``action`` field.
    unit : str
        What one count of the action is; table figures are converted to it.
    meaning : str
        One line on what is counted.
    scaled : bool
        True if the energy scales with the logic node (see the module docstring).
    """

    name: str
    unit: str
    meaning: str
    scaled: bool


#: The actions the model prices, in report order. The performance model produces counts of these.
ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("mac_int8", "operation",
           "one 8x8-bit multiply accumulated into a 32-bit register", True),
    Action("add_int8", "operation", "one 8-bit integer addition", True),
    Action("add_int32", "operation", "one 32-bit integer addition", True),
    Action("mul_int8", "operation", "one 8x8-bit integer multiplication", True),
    Action("mul_int32", "operation", "one 32x32-bit integer multiplication", True),
    Action("sram_read_bit", "bit", "one bit read from on-chip scratchpad SRAM", True),
    Action("sram_write_bit", "bit", "one bit written to on-chip scratchpad SRAM", True),
    Action("dram_bit", "bit", "one bit read from or written to off-chip DRAM", False),
    Action("adc_conversion", "conversion",
           "one analog-to-digital conversion at the given ENOB", False),
    Action("crossbar_row_read", "cell read",
           "one ReRAM cell of one driven crossbar row, for one input bit-plane (array only)",
           False),
    Action("flit_hop_bit", "bit", "one bit over one router and its outgoing link", True),
    Action("vertical_link_bit", "bit",
           "one bit over one TSV or hybrid-bond link between tiers", False),
)}

#: The ENOB values ADC energy is defined for (inclusive).
ENOB_RANGE = (1.0, 16.0)

_ADC = "adc_conversion"
_ADC_PER = ("conversion", "conversion-step")
_ENTRY_FIELDS = ("action", "pj", "per", "node_nm", "source", "note")
_ENTRY_OPTIONAL = ("bits", "enob")
_NODE_FIELDS = ("nm", "vdd", "fit", "note")
_SCALING_FIELDS = ("source", "note", "reference_nm", "node")
_WIDTH = re.compile(r"(?<![\w.])(\d+)-bit\b")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_node_arg(node_nm: Any) -> float:
    if not _is_number(node_nm) or node_nm <= 0:
        raise ValueError(f"node_nm must be a positive number of nanometres; given: {node_nm!r}")
    return float(node_nm)


def _check_enob(enob: Any) -> float:
    lo, hi = ENOB_RANGE
    if not _is_number(enob) or not lo <= enob <= hi:
        raise ValueError(f"enob must be a number from {lo:g} to {hi:g}; given: {enob!r}")
    return float(enob)


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One published figure, as read from the table.

    Attributes
    ----------
    index : int
        Its position among the table's ``[[entry]]`` tables (0-based).
    action : str
        The action it prices.
    pj_low, pj_high : float
        The figure as published, in pJ per ``per``; equal when the source gives one number.
    per : str
        What the figure counts.
    bits : int or None
        The width named in ``per`` (the figure is divided by it), for a per-word figure.
    enob : float or None
        The ENOB an ADC figure per conversion was taken at.
    node_nm : float
        The figure's technology node.
    source, note : str
        Its citation, and how it was derived.
    """

    index: int
    action: str
    pj_low: float
    pj_high: float
    per: str
    bits: int | None
    enob: float | None
    node_nm: float
    source: str
    note: str

    def unit_pj(self) -> tuple[float, float]:
        """The figure in the action's unit at the figure's own node, in pJ.

        Returns
        -------
        (low, high) : tuple of float
            For a per-word figure, divided by ``bits``. For an ADC entry it is the figure as
            stored (per conversion step, or per conversion at ``enob``); ENOB is applied by
            :meth:`EnergyTable.entry_range`.
        """
        div = self.bits or 1
        return self.pj_low / div, self.pj_high / div


@dataclass(frozen=True)
class ScalingNode:
    """One node of the scaling table: a fitted energy polynomial and the supply it is taken at.

    Attributes
    ----------
    nm : float
        The node.
    vdd : float
        The supply voltage, V.
    fit : tuple of float
        (a, b, c) of the fit a V^2 + b V + c.
    note : str
        The fit's device flavour or other remarks.
    """

    nm: float
    vdd: float
    fit: tuple[float, float, float]
    note: str

    @property
    def energy(self) -> float:
        """a V^2 + b V + c: the node's energy in the fit's (arbitrary) unit."""
        a, b, c = self.fit
        return a * self.vdd ** 2 + b * self.vdd + c


@dataclass(frozen=True)
class NodeScaling:
    """Logic energy against node, from the table's ``[scaling]`` section.

    Attributes
    ----------
    nodes : tuple of ScalingNode
        Sorted by node, smallest first.
    reference_nm : float
        The node :meth:`relative` is normalised to.
    source, note : str
        The scaling table's citation and remarks.
    """

    nodes: tuple[ScalingNode, ...]
    reference_nm: float
    source: str
    note: str

    @property
    def span(self) -> tuple[float, float]:
        """The smallest and the largest node of the table, nm."""
        return self.nodes[0].nm, self.nodes[-1].nm

    def check(self, node_nm: Any) -> float:
        """Return ``node_nm`` as a float if the table covers it.

        Raises
        ------
        ValueError
            If it is not a positive number, or lies outside the table's nodes.
        """
        nm = _check_node_arg(node_nm)
        lo, hi = self.span
        if not lo <= nm <= hi:
            raise ValueError(f"node {nm:g} nm is outside the energy scaling table, which covers "
                             f"{lo:g} to {hi:g} nm (nodes {self.node_list()}); it is not "
                             "extrapolated")
        return nm

    def node_list(self) -> str:
        """The table's nodes, as text."""
        return ", ".join(f"{n.nm:g}" for n in self.nodes)

    def _energy(self, nm: float) -> float:
        nodes = self.nodes
        for lower, upper in zip(nodes, nodes[1:], strict=False):
            if lower.nm <= nm <= upper.nm:
                if nm == lower.nm:
                    return lower.energy
                if nm == upper.nm:
                    return upper.energy
                t = math.log(nm / lower.nm) / math.log(upper.nm / lower.nm)
                return math.exp((1 - t) * math.log(lower.energy) + t * math.log(upper.energy))
        return nodes[0].energy  # a one-node table: check() admits only that node

    def relative(self, node_nm: Any) -> float:
        """Energy at a node relative to the reference node (log-log interpolated).

        Parameters
        ----------
        node_nm : float
            The node, inside the table.

        Returns
        -------
        float
            F(node) / F(reference).
        """
        return self._energy(self.check(node_nm)) / self._energy(self.reference_nm)

    def factor(self, from_nm: Any, to_nm: Any) -> float:
        """The factor a logic figure at ``from_nm`` is multiplied by to give it at ``to_nm``."""
        return self._energy(self.check(to_nm)) / self._energy(self.check(from_nm))

    def rows(self) -> list[tuple[float, float, float]]:
        """The table as (node nm, Vdd V, energy relative to the reference node), by node."""
        ref = self._energy(self.reference_nm)
        return [(n.nm, n.vdd, n.energy / ref) for n in self.nodes]


class EnergyTable:
    """The validated per-action energy table. Made by :func:`load_table`.

    Attributes
    ----------
    entries : tuple of Entry
        Every figure, in table order.
    scaling : NodeScaling
        The node-scaling table.
    origin : str
        Where the table was read from.
    """

    def __init__(self, entries: tuple[Entry, ...], scaling: NodeScaling, origin: str):
        self.entries = entries
        self.scaling = scaling
        self.origin = origin

    def __repr__(self) -> str:
        return f"EnergyTable({self.origin!r}, {len(self.entries)} entries)"

    def entries_for(self, action: str) -> tuple[Entry, ...]:
        """The entries pricing ``action``, in table order.

        Raises
        ------
        ValueError
            If ``action`` is not one of :data:`ACTIONS`.
        """
        _check_action(action)
        return tuple(e for e in self.entries if e.action == action)

    def entry_range(self, entry: Entry, node_nm: Any,
                    enob: float | None = None) -> tuple[float, float]:
        """One entry's figure in its action's unit at ``node_nm``, in pJ.

        Parameters
        ----------
        entry : Entry
            An entry of this table.
        node_nm : float
            The node, inside the scaling table.
        enob : float, optional
            Required for an ``adc_conversion`` entry, refused for any other.

        Returns
        -------
        (low, high) : tuple of float
        """
        node = self.scaling.check(node_nm)
        low, high = entry.unit_pj()
        if entry.action == _ADC:
            if enob is None:
                raise ValueError("adc_conversion energy needs enob (the converter's effective "
                                 f"number of bits, {ENOB_RANGE[0]:g} to {ENOB_RANGE[1]:g})")
            bits = _check_enob(enob)
            gain = 2.0 ** (bits if entry.per == "conversion-step" else bits - entry.enob)
            return low * gain, high * gain
        if enob is not None:
            raise ValueError(f"enob applies to adc_conversion only, not to {entry.action!r}; "
                             f"given: {enob!r}")
        if ACTIONS[entry.action].scaled:
            f = self.scaling.factor(entry.node_nm, node)
            return low * f, high * f
        return low, high

    def range(self, action: str, node_nm: Any, enob: float | None = None) -> tuple[float, float]:
        """An action's energy in its unit at a node: (lowest low, highest high) over its entries.

        Parameters
        ----------
        action : str
            One of :data:`ACTIONS`.
        node_nm : float
            The node, inside the scaling table.
        enob : float, optional
            Required for ``adc_conversion`` (1 to 16), refused for the other actions.

        Returns
        -------
        (low_pj, high_pj) : tuple of float
            Picojoules per one unit of the action.

        Raises
        ------
        ValueError
            For an unknown action, a node outside the table, a missing or out-of-range ENOB,
            or an action this table has no entry for.
        """
        ranges = [self.entry_range(e, node_nm, enob) for e in self.entries_for(action)]
        if not ranges:
            raise ValueError(f"{self.origin} has no entry for {action!r}")
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def adc_energy(self, enob: float, node_nm: Any) -> tuple[float, float]:
        """Energy of one conversion at ``enob``: the range over the figure-of-merit entries
        (FOM x 2^ENOB) and the measured points (scaled by 2^(ENOB - their ENOB)), in pJ.

        Parameters
        ----------
        enob : float
            Effective number of bits, 1 to 16.
        node_nm : float
            The node, inside the scaling table (ADC energy itself does not scale with it).

        Returns
        -------
        (low_pj, high_pj) : tuple of float
        """
        return self.range(_ADC, node_nm, enob=_check_enob(enob))

    def energy(self, counts: Mapping[str, float], node_nm: Any,
               enob: float | None = None) -> EnergyReport:
        """Price action counts at a node.

        Parameters
        ----------
        counts : mapping of str to float
            Action name to count (non-negative; fractional counts, e.g. averages, are allowed).
        node_nm : float
            The node, inside the scaling table.
        enob : float, optional
            The ADCs' effective resolution; required only when ``adc_conversion`` is counted
            (a non-zero count).

        Returns
        -------
        EnergyReport

        Raises
        ------
        ValueError
            For an unknown action, a negative or non-numeric count, a node outside the table,
            ADC conversions counted without an ENOB, or an ENOB outside 1..16.
        """
        if not isinstance(counts, Mapping):
            raise ValueError(f"counts must be a mapping of action name to count; given: "
                             f"{type(counts).__name__}")
        node = self.scaling.check(node_nm)
        if enob is not None:
            _check_enob(enob)
        for name, count in counts.items():
            _check_action(name)
            if not _is_number(count) or count < 0:
                raise ValueError(f"count of {name!r} must be a non-negative finite number; "
                                 f"given: {count!r}")
        if counts.get(_ADC, 0) > 0 and enob is None:
            raise ValueError("adc_conversion is counted, so enob (the ADCs' effective number "
                             f"of bits, {ENOB_RANGE[0]:g} to {ENOB_RANGE[1]:g}) is required")
        rows = []
        for name in ACTIONS:
            if name not in counts:
                continue
            count = float(counts[name])
            if name == _ADC and enob is None:  # counted zero times: no ENOB needed
                lo = hi = 0.0
            else:
                lo, hi = self.range(name, node, enob if name == _ADC else None)
            rows.append((name, count, count * lo * 1e-12, count * hi * 1e-12))
        low = sum(r[2] for r in rows)
        high = sum(r[3] for r in rows)
        actions = tuple(ActionEnergy(name, count, ACTIONS[name].unit, lo, hi,
                                     lo / low if low > 0 else 0.0,
                                     hi / high if high > 0 else 0.0)
                        for name, count, lo, hi in rows)
        return EnergyReport(node, None if enob is None else float(enob), low, high, actions)


def _check_action(action: Any) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; known actions: {', '.join(ACTIONS)}")


# -- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionEnergy:
    """One action's part of an :class:`EnergyReport`.

    Attributes
    ----------
    action, unit : str
        The action and what one count of it is.
    count : float
        How many were counted.
    low_j, high_j : float
        Its energy, J.
    share_low, share_high : float
        Its fraction of the low total and of the high total.
    """

    action: str
    count: float
    unit: str
    low_j: float
    high_j: float
    share_low: float
    share_high: float


@dataclass(frozen=True)
class EnergyReport:
    """Energy of a set of action counts at a node, as a range.

    Attributes
    ----------
    node_nm : float
        The node priced at.
    enob : float or None
        The ADC ENOB used, if any.
    low_j, high_j : float
        Total energy, J: every action at its low figure, and every action at its high one.
    actions : tuple of ActionEnergy
        Per counted action, in :data:`ACTIONS` order.
    """

    node_nm: float
    enob: float | None
    low_j: float
    high_j: float
    actions: tuple[ActionEnergy, ...]

    def __getitem__(self, action: str) -> ActionEnergy:
        for row in self.actions:
            if row.action == action:
                return row
        raise KeyError(action)

    def format(self) -> str:
        """A readable table: one line per action, then the total.

        Returns
        -------
        str
        """
        head = f"Energy at {self.node_nm:g} nm"
        if self.enob is not None:
            head += f", ADC ENOB {self.enob:g}"
        lines = [head + " (low .. high)",
                 f"{'action':<18} {'count':>10} {'unit':<10} {'low [J]':>10} {'high [J]':>10}"
                 f" {'share low/high':>15}"]
        for r in self.actions:
            share = f"{100 * r.share_low:.1f}% / {100 * r.share_high:.1f}%"
            lines.append(f"{r.action:<18} {r.count:>10.4g} {r.unit:<10} {r.low_j:>10.3e}"
                         f" {r.high_j:>10.3e} {share:>15}")
        lines.append(f"{'total':<18} {'':>10} {'':<10} {self.low_j:>10.3e} {self.high_j:>10.3e}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# -- loading and validation -------------------------------------------------------------------


class _Where:
    """Builds the loader's error messages: where, which field, what is allowed, what was given."""

    def __init__(self, origin: str, place: str):
        self.origin, self.place = origin, place

    def error(self, field: str, problem: str, allowed: str, given: Any = None,
              missing: bool = False) -> ValueError:
        shown = "nothing (the field is missing)" if missing else repr(given)
        return ValueError(f"{self.origin}: {self.place}: field {field!r} {problem}; "
                          f"allowed: {allowed}; given: {shown}")


def _number(where: _Where, data: dict, field: str, allowed: str, positive: bool = True) -> float:
    if field not in data:
        raise where.error(field, "is missing", allowed, missing=True)
    value = data[field]
    if not _is_number(value):
        raise where.error(field, "must be a finite number", allowed, value)
    if positive and value <= 0:
        raise where.error(field, "must be positive", allowed, value)
    return float(value)


def _text(where: _Where, data: dict, field: str) -> str:
    allowed = "a non-empty string"
    if field not in data:
        raise where.error(field, "is missing", allowed, missing=True)
    value = data[field]
    if not isinstance(value, str) or not value.strip():
        raise where.error(field, "must be a non-empty string", allowed, value)
    return value


def _unknown_fields(where: _Where, data: dict, known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            raise where.error(key, "is not a field of this table", ", ".join(known), data[key])


def _parse_scaling(origin: str, doc: dict) -> NodeScaling:
    where = _Where(origin, "[scaling]")
    if "scaling" not in doc or not isinstance(doc["scaling"], dict):
        raise ValueError(f"{origin}: [scaling] is missing; allowed: a table with fields "
                         f"{', '.join(_SCALING_FIELDS)}; given: {doc.get('scaling')!r}")
    sc = doc["scaling"]
    _unknown_fields(where, sc, _SCALING_FIELDS)
    source, note = _text(where, sc, "source"), _text(where, sc, "note")
    raw = sc.get("node")
    if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(n, dict) for n in raw):
        raise where.error("node", "must be an array of at least two [[scaling.node]] tables",
                          "[[scaling.node]] tables with nm, vdd, fit, note", raw,
                          missing="node" not in sc)
    nodes = []
    for i, item in enumerate(raw):
        w = _Where(origin, f"scaling.node[{i}]")
        _unknown_fields(w, item, _NODE_FIELDS)
        nm = _number(w, item, "nm", "a positive number of nanometres")
        vdd = _number(w, item, "vdd", "a positive supply voltage, V")
        fit = item.get("fit")
        if not (isinstance(fit, list) and len(fit) == 3 and all(_is_number(x) for x in fit)):
            raise w.error("fit", "must be three numbers", "[a, b, c] of a V^2 + b V + c", fit,
                          missing="fit" not in item)
        node = ScalingNode(nm, vdd, (float(fit[0]), float(fit[1]), float(fit[2])),
                           item.get("note", ""))
        if node.energy <= 0:
            raise w.error("fit", f"gives a non-positive energy at {vdd:g} V ({node.energy:g})",
                          "coefficients giving a positive a V^2 + b V + c", fit)
        nodes.append(node)
    nodes.sort(key=lambda n: n.nm)
    for a, b in zip(nodes, nodes[1:], strict=False):
        if a.nm == b.nm:
            raise where.error("node", f"lists node {a.nm:g} nm twice", "distinct nodes", a.nm)
    span = f"{nodes[0].nm:g} to {nodes[-1].nm:g} nm"
    ref = _number(where, sc, "reference_nm", f"a node from {span}")
    if not nodes[0].nm <= ref <= nodes[-1].nm:
        raise where.error("reference_nm", "is outside the table's nodes", span,
                          sc["reference_nm"])
    return NodeScaling(tuple(nodes), ref, source, note)


def _parse_entry(origin: str, i: int, item: Any, scaling: NodeScaling) -> Entry:
    name = item.get("action") if isinstance(item, dict) else None
    where = _Where(origin, f"entry[{i}] (action {name!r})")
    if not isinstance(item, dict):
        raise where.error("entry", "must be a table", "an [[entry]] table", item)
    _unknown_fields(where, item, _ENTRY_FIELDS + _ENTRY_OPTIONAL)
    if "action" not in item:
        raise where.error("action", "is missing", ", ".join(ACTIONS), missing=True)
    if name not in ACTIONS:
        raise where.error("action", "names no known action", ", ".join(ACTIONS), name)
    action = ACTIONS[name]

    allowed_pj = "a positive number of pJ, or [low, high] with 0 < low <= high"
    if "pj" not in item:
        raise where.error("pj", "is missing", allowed_pj, missing=True)
    pj = item["pj"]
    pair = [pj] if not isinstance(pj, list) else pj
    if not 1 <= len(pair) <= 2 or not all(_is_number(x) for x in pair):
        raise where.error("pj", "must be a number or a [low, high] pair", allowed_pj, pj)
    if any(x <= 0 for x in pair):
        raise where.error("pj", "must be positive (an energy)", allowed_pj, pj)
    low, high = float(pair[0]), float(pair[-1])
    if low > high:
        raise where.error("pj", "has low > high", allowed_pj, pj)

    per = _text(where, item, "per")
    bits, enob = item.get("bits"), item.get("enob")
    if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool) or bits < 1):
        raise where.error("bits", "must be a positive integer", "the width named in 'per'", bits)
    if action.unit == "bit":
        width = _WIDTH.search(per)
        if per == "bit":
            if bits not in (None, 1):
                raise where.error("bits", "contradicts per = 'bit'", "no bits field, or 1", bits)
        elif width is None:
            raise where.error("per", "names no width", "'bit', or a description naming its "
                              "width as 'N-bit ...' (with bits = N)", per)
        elif bits != int(width.group(1)):
            raise where.error("bits", f"must equal the width in per {per!r}", width.group(1),
                              bits, missing=bits is None)
    else:
        if bits is not None:
            raise where.error("bits", f"does not apply to {action.name} (per {action.unit})",
                              "no bits field", bits)
        allowed_per = _ADC_PER if action.name == _ADC else (action.unit,)
        if per not in allowed_per:
            raise where.error("per", f"does not fit {action.name}",
                              ", ".join(repr(p) for p in allowed_per), per)
    if action.name == _ADC and per == "conversion":
        lo, hi = ENOB_RANGE
        if enob is None:
            raise where.error("enob", "is required with per = 'conversion'",
                              f"the ENOB the figure was taken at, {lo:g} to {hi:g}",
                              missing=True)
        if not _is_number(enob) or not lo <= enob <= hi:
            raise where.error("enob", "is out of range", f"{lo:g} to {hi:g}", enob)
    elif enob is not None:
        raise where.error("enob", "applies only to adc_conversion with per = 'conversion'",
                          "no enob field", enob)

    node_nm = _number(where, item, "node_nm", "a positive number of nanometres")
    span = scaling.span
    if not span[0] <= node_nm <= span[1]:
        raise where.error("node_nm", "is outside the scaling table",
                          f"{span[0]:g} to {span[1]:g} nm", item["node_nm"])
    return Entry(i, name, low, high, per, bits, None if enob is None else float(enob), node_nm,
                 _text(where, item, "source"), _text(where, item, "note"))


def load_table(path: str | Path | None = None) -> EnergyTable:
    """Read and validate an energy table.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file. The default is the table shipped with the package
        (``heterotron/sim/data/energy.toml``), found through the package's resources, so it
        works from an installed copy.

    Returns
    -------
    EnergyTable

    Raises
    ------
    ValueError
        If the file is not valid TOML, or for the first malformed entry: an unknown action, a
        missing or unknown field, a non-positive energy, low > high, a node outside the scaling
        table, ``per`` and ``bits`` (or ``enob``) that disagree. The message names the entry
        (its index among the ``[[entry]]`` tables, and its action), the field, what is allowed
        and what was given.
    """
    if path is None:
        origin = "built-in sim/data/energy.toml"
        text = resources.files("heterotron.sim").joinpath("data", "energy.toml").read_text()
    else:
        origin = str(path)
        text = Path(path).read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{origin}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("scaling", "entry"):
            raise ValueError(f"{origin}: unknown top-level key {key!r}; allowed: scaling, entry;"
                             f" given: {doc[key]!r}")
    scaling = _parse_scaling(origin, doc)
    raw = doc.get("entry", [])
    if not isinstance(raw, list):
        raise ValueError(f"{origin}: 'entry' must be an array of [[entry]] tables; given: "
                         f"{raw!r}")
    entries = tuple(_parse_entry(origin, i, item, scaling) for i, item in enumerate(raw))
    return EnergyTable(entries, scaling, origin)


@lru_cache(maxsize=1)
def default_table() -> EnergyTable:
    """The shipped table, read once."""
    return load_table()


def adc_energy(enob: float, node_nm: Any, table: EnergyTable | None = None
               ) -> tuple[float, float]:
    """Energy of one ADC conversion at ``enob``, in pJ: see :meth:`EnergyTable.adc_energy`.

    Parameters
    ----------
    enob : float
        Effective number of bits, 1 to 16.
    node_nm : float
        The node, inside the scaling table.
    table : EnergyTable, optional
        The default is the shipped table.

    Returns
    -------
    (low_pj, high_pj) : tuple of float
    """
    return (table or default_table()).adc_energy(enob, node_nm)


def energy(counts: Mapping[str, float], node_nm: Any, enob: float | None = None,
           table: EnergyTable | None = None) -> EnergyReport:
    """Price action counts at a node: see :meth:`EnergyTable.energy`.

    Parameters
    ----------
    counts : mapping of str to float
        Action name (one of :data:`ACTIONS`) to a non-negative count.
    node_nm : float
        The node, inside the scaling table.
    enob : float, optional
        Required only when ``adc_conversion`` is counted.
    table : EnergyTable, optional
        The default is the shipped table.

    Returns
    -------
    EnergyReport
    """
    return (table or default_table()).energy(counts, node_nm, enob)
