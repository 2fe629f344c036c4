r"""Thermal model of a (3D-stacked) accelerator: a layered compact RC network, HotSpot-style.

The die is a stack of ``tiers`` (1 for a 2D chip), each an ``nx`` x ``ny`` grid of cells, one
cell per tile footprint ``tile_w`` x ``tile_h`` (m). Every layer of the stack is cut into the
same grid, and each cell of each layer is one node of a thermal RC network: a temperature, a
heat capacity to the reference, and conductances to its neighbours. Temperatures are in
kelvin, powers in watts, times in seconds, as in HotSpot.

Layers
------
Numbered from the heat sink outward (index 0 is the sink)::

    0  heat sink base        t_sink,      k_sink,      p_sink   (to ambient through r_convec)
    1  heat spreader         t_spreader,  k_spreader,  p_spreader
    2  thermal interface     t_interface, k_interface, p_interface   (TIM)
    3  tier 0 bulk silicon   t_bulk,      k_chip,      p_chip
    4  tier 0 active layer   t_active,    k_chip,      p_chip   <- tier 0's power
    5  bond (tier 0 | 1)     t_bond,      k_bond,      p_bond
    6  tier 1 bulk silicon
    7  tier 1 active layer                                      <- tier 1's power
    ...                      (3 * tiers + 2 layers in all)

Tier 0 is the tier nearest the sink; tier ``i``'s bulk is layer ``3 + 3 i``, its active layer
``4 + 3 i`` and the bond above it ``5 + 3 i``. ``k`` is a thermal conductivity (W/(m K)) and
``p`` a volumetric heat capacity (J/(m^3 K)), HotSpot's names.

How this relates to HotSpot. The materials come in HotSpot's physical order: silicon, TIM,
spreader, sink, with the heat sink on the back of the silicon (flip-chip orientation) so that
the heat of a tier flows through its bulk silicon toward the sink, and between two dies an
inter-die layer as in HotSpot's 3D example (``examples/example4/ev6_3D.lcf``: Si, TIM, Si,
TIM, Si, TIM, then spreader and sink). HotSpot numbers its layers the other way round: its
layer 0 is the silicon farthest from the sink, the layer-configuration file lists the die
from there toward the sink, and the spreader and sink are appended last; here index 0 is the
sink, so that tier 0 is the tier next to it. HotSpot's silicon is one layer with the power in
it; here each tier splits it into a thin active layer (where its power is dissipated, on the
face away from the sink) and its bulk, as 3D-ICE's dies do (``source 2 SILICON; layer 50
SILICON``). A power map's axes are ``[tier, row, column]``: a row runs along x (``nx``
cells of ``tile_w``), a column along y (``ny`` cells of ``tile_h``); as in HotSpot's grid
model row 0 may be read as the top edge of the floorplan, a convention that changes nothing
in the physics.

Conductances
------------
With the cell area :math:`A = w h` (``tile_w * tile_h``) and a layer of thickness :math:`t`
and conductivity :math:`k`:

* lateral, between neighbouring cells of one layer, through the shared edge over the
  centre-to-centre distance (the two half-cells in series, as HotSpot's grid model does with
  its :math:`r_x / 2 + r_x / 2`)

  .. math:: g_x = k\,t\,h / w \quad \text{(along a row)}, \qquad
            g_y = k\,t\,w / h \quad \text{(along a column)};

* vertical, between a cell and the cell above it (layers :math:`l` and :math:`l + 1`),
  through the two half-thicknesses in series

  .. math:: g_z = A \Big/ \left(\frac{t_l}{2 k_l} + \frac{t_{l+1}}{2 k_{l+1}}\right);

  (HotSpot's grid model puts between two nodes the whole thickness of the one of the two
  layers farther from the sink, :math:`r_z = t / (k A)`, so its node sits on that layer's
  outer face; the half-thickness form puts each node at the middle of its layer);

* to ambient, from each sink cell, its area's share of the convection resistance
  :math:`R_{conv}` (``r_convec``, K/W, the sink-to-air resistance of the whole package)

  .. math:: g_{amb} = \frac{A}{n_x n_y w h} \cdot \frac{1}{R_{conv}}
            = \frac{1}{n_x n_y R_{conv}};

  :math:`R_{conv}` is referred to the sink node: the outer half of the sink base is taken to
  be part of it. (HotSpot adds the whole sink thickness to its share of :math:`R_{conv}`.)

The edges of every layer are adiabatic. A cell's heat capacity is :math:`C = p\,t\,A`; each
sink cell also carries its share of the convection capacitance ``c_convec``, scaled by
HotSpot's lumping factor :data:`C_FACTOR`, as HotSpot's grid model does:
:math:`C_{sink} \mathrel{+}= C_{FACTOR}\,c_{convec} / (n_x n_y)`.

Systems
-------
With :math:`G` the conductance (Laplacian) matrix, whose diagonal holds each node's
conductances to its neighbours and to ambient (so that :math:`G \mathbf{1} = g_{amb}`),
:math:`C` the diagonal of heat capacities and :math:`P` the power at the active-layer nodes:

* steady state: :math:`G\,T = P + g_{amb} T_{amb}`. It is solved for the rise over ambient,
  :math:`G\,\theta = P`, :math:`T = T_{amb} + \theta` (the same system, since
  :math:`G \mathbf{1} = g_{amb}`, and more accurate in floating point), with
  :func:`scipy.sparse.linalg.spsolve`. The heat to ambient,
  :math:`\sum g_{amb} (T_{sink} - T_{amb})`, equals the total power;
* transient: :math:`C\,\dot T = P - G\,T + g_{amb} T_{amb}`, by backward Euler with the step
  :math:`\Delta t` (first order, unconditionally stable):

  .. math:: \left(\frac{C}{\Delta t} + G\right)\theta_{n+1}
            = \frac{C}{\Delta t}\,\theta_n + P_n,

  :math:`P_n` being the power map held over the step :math:`(n \Delta t, (n + 1) \Delta t]`.
  The matrix is factorised once (:func:`scipy.sparse.linalg.splu`) per stack and step.

Simplifications
---------------
* The spreader and the sink base have the die's footprint. HotSpot gives them their own sides
  (``s_spreader`` = 30 mm, ``s_sink`` = 60 mm) and models the parts beyond the die by
  peripheral nodes, so the heat spreads laterally before it crosses them. Here it crosses them
  in a column of the die's area, which over-estimates their vertical resistance (a pessimistic
  bias, larger for small dies: with the defaults, the sink base of an 8 mm x 8 mm die is
  :math:`t_{sink} / (k_{sink} A) \approx 0.27` K/W, against about 0.005 K/W for HotSpot's
  60 mm x 60 mm one) and under-estimates their heat capacity.
* No secondary path (C4 bumps, package substrate, PCB); HotSpot leaves it off by default too.
* Conductivities and heat capacities are constant (no temperature dependence), and there is
  no temperature-leakage loop: the power maps are inputs.

Sources
-------
* HotSpot 7.0 (github.com/uvahotspot/HotSpot, read at commit f18831e4, 2022):
  ``temperature.c`` ``default_thermal_config()`` for the defaults; ``temperature_grid.c``
  ``populate_R_model_grid()`` and ``populate_C_model_grid()`` for the grid model's
  resistances, the sharing of ``r_convec`` and ``c_convec`` by area and :data:`C_FACTOR`
  (``temperature.h``); ``examples/example4/ev6_3D.lcf`` (Coskun et al., Boston University)
  for a 3D stack's inter-die layer.
* K. Skadron et al., "Temperature-aware microarchitecture: modeling and implementation", ACM
  TACO 1(1), 2004; W. Huang et al., "HotSpot: a compact thermal modeling methodology for
  early-stage VLSI design", IEEE TVLSI 14(5), 2006.
* 3D-ICE (github.com/esl-epfl/3d-ice), ``bin/example_transient.stk``: a die as a 2 um
  ``source`` layer of silicon on its bulk.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.sparse.linalg import splu, spsolve

__all__ = [
    "C_FACTOR",
    "Layer",
    "Network",
    "Stack",
    "SteadyResult",
    "TransientResult",
    "network",
    "steady",
    "transient",
]

#: HotSpot's fitting factor for the lumped convection capacitance, "to match floworks (due to
#: lumping)" (``temperature.h``, ``C_FACTOR``); the grid model adds
#: ``C_FACTOR * c_convec`` to the sink, shared by area (``populate_C_model_grid()``).
C_FACTOR = 0.333

#: Layer kinds, from the sink outward.
KINDS = ("sink", "spreader", "interface", "bulk", "active", "bond")


def _fail(name: str, rule: str, value) -> ValueError:
    return ValueError(f"{name} must be {rule}; got {value!r}")


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise _fail(name, f"an integer >= {lo}", value)


def _check_real(name: str, value, unit: str, *, allow_zero: bool = False) -> None:
    rule = f"a finite number {'>=' if allow_zero else '>'} 0 ({unit})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, rule, value)
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise _fail(name, rule, value)


@dataclass(frozen=True)
class Layer:
    """One layer of the stack, as :meth:`Stack.layers` lists them from the sink outward.

    Attributes
    ----------
    name : str
        ``"sink"``, ``"spreader"``, ``"interface"``, ``"tier<i>.bulk"``, ``"tier<i>.active"``
        or ``"bond<i>"`` (the bond between tiers ``i`` and ``i + 1``).
    kind : str
        One of :data:`KINDS`.
    tier : int or None
        The tier of a bulk, active or bond layer (a bond belongs to the tier below it); None
        for the package layers.
    thickness : float
        Thickness in m.
    conductivity : float
        Thermal conductivity in W/(m K).
    heat_capacity : float
        Volumetric heat capacity in J/(m^3 K).
    """

    name: str
    kind: str
    tier: int | None
    thickness: float
    conductivity: float
    heat_capacity: float


@dataclass(frozen=True)
class Stack:
    """The geometry and materials of a stack; every parameter is checked at construction.

    The material defaults are HotSpot's (``default_thermal_config()`` in ``temperature.c``
    of HotSpot 7), except those marked as assumptions. A parameter out of range raises a
    :class:`ValueError` naming it, its allowed range and the value given.

    Parameters
    ----------
    tiers : int
        Number of stacked dies, >= 1; tier 0 is next to the heat sink.
    nx, ny : int
        Cells per row (along x) and per column (along y), each >= 1.
    tile_w, tile_h : float
        A cell's width (x) and height (y) in m, > 0.
    ambient : float
        Ambient temperature in K.
    r_convec : float
        Convection resistance from the heat sink to ambient, K/W.
    c_convec : float
        Convection capacitance, J/K (>= 0); the sink carries ``C_FACTOR * c_convec``.
    t_sink, k_sink, p_sink : float
        Heat sink base: thickness (m), conductivity (W/(m K)), volumetric heat capacity
        (J/(m^3 K)).
    t_spreader, k_spreader, p_spreader : float
        Heat spreader, likewise.
    t_interface, k_interface, p_interface : float
        Thermal interface material between the spreader and tier 0, likewise.
    t_active, t_bulk : float
        Thickness (m) of each tier's active layer and of its bulk silicon.
    k_chip, p_chip : float
        Silicon conductivity and volumetric heat capacity, for both.
    t_bond, k_bond, p_bond : float
        The bonding layer between two tiers (hybrid bond or micro-bumps with underfill, and
        TSVs), as an effective homogeneous layer.
    """

    tiers: int
    nx: int
    ny: int
    tile_w: float
    tile_h: float
    # HotSpot default_thermal_config(): ambient = 45 + 273.15 K.
    ambient: float = 318.15
    # HotSpot default_thermal_config(): r_convec = 0.1 K/W.
    r_convec: float = 0.1
    # HotSpot default_thermal_config(): c_convec = 140.4 J/K.
    c_convec: float = 140.4
    # HotSpot default_thermal_config(): t_sink = 6.9e-3 m, k_sink = 400 W/(m K),
    # p_sink = 3.55e6 J/(m^3 K) (copper).
    t_sink: float = 6.9e-3
    k_sink: float = 400.0
    p_sink: float = 3.55e6
    # HotSpot default_thermal_config(): t_spreader = 1e-3 m, k_spreader = 400 W/(m K),
    # p_spreader = 3.55e6 J/(m^3 K) (copper).
    t_spreader: float = 1e-3
    k_spreader: float = 400.0
    p_spreader: float = 3.55e6
    # HotSpot default_thermal_config(): t_interface = 20e-6 m, k_interface = 4.0 W/(m K),
    # p_interface = 4.0e6 J/(m^3 K).
    t_interface: float = 20e-6
    k_interface: float = 4.0
    p_interface: float = 4.0e6
    # Assumption: a 2 um active (source) layer, as 3D-ICE's example dies
    # (bin/example_transient.stk: "source 2 SILICON"); HotSpot has no separate active layer.
    t_active: float = 2e-6
    # Assumption: the bulk makes the tier's silicon HotSpot's t_chip = 0.15e-3 m in all
    # (default_thermal_config()); thinned upper dies are thinner: set it.
    t_bulk: float = 148e-6
    # HotSpot default_thermal_config(): k_chip = 100 W/(m K), p_chip = 1.75e6 J/(m^3 K)
    # (silicon at 300-400 K; HotSpot's example "silicon" material has 130 and 1.6303e6).
    k_chip: float = 100.0
    p_chip: float = 1.75e6
    # Assumption: HotSpot's 3D example (examples/example4/ev6_3D.lcf) puts between two dies
    # a TIM layer of 2.0e-5 m, resistivity 0.25 m K/W (k = 4 W/(m K)), 4e6 J/(m^3 K); its
    # TSV blocks (resistivity 0.0058 m K/W) are left out here, so the default is
    # conservative. A hybrid bond is thinner and conducts better: set these for it.
    t_bond: float = 20e-6
    k_bond: float = 4.0
    p_bond: float = 4.0e6

    _lengths = ("tile_w", "tile_h", "t_sink", "t_spreader", "t_interface", "t_active",
                "t_bulk", "t_bond")

    def __post_init__(self) -> None:
        for name in ("tiers", "nx", "ny"):
            _check_int(name, getattr(self, name), 1)
        for name in self._lengths:
            _check_real(name, getattr(self, name), "m")
        for name in ("k_sink", "k_spreader", "k_interface", "k_chip", "k_bond"):
            _check_real(name, getattr(self, name), "W/(m K)")
        for name in ("p_sink", "p_spreader", "p_interface", "p_chip", "p_bond"):
            _check_real(name, getattr(self, name), "J/(m^3 K)")
        _check_real("ambient", self.ambient, "K")
        _check_real("r_convec", self.r_convec, "K/W")
        _check_real("c_convec", self.c_convec, "J/K", allow_zero=True)

    @property
    def n_layers(self) -> int:
        """Number of layers, ``3 * tiers + 2``."""
        return 3 * self.tiers + 2

    @property
    def n_nodes(self) -> int:
        """Number of nodes, ``n_layers * ny * nx``."""
        return self.n_layers * self.ny * self.nx

    @property
    def cell_area(self) -> float:
        """A cell's area in m^2."""
        return self.tile_w * self.tile_h

    @property
    def die_area(self) -> float:
        """The die's (and, here, the spreader's and sink's) area in m^2."""
        return self.nx * self.ny * self.cell_area

    def active_layer(self, tier: int) -> int:
        """Index of tier ``tier``'s active layer in :meth:`layers`."""
        _check_int("tier", tier, 0)
        if tier >= self.tiers:
            raise _fail("tier", f"an integer in [0, {self.tiers - 1}]", tier)
        return 4 + 3 * tier

    def layers(self) -> tuple[Layer, ...]:
        """The layers, from the heat sink outward (see the module's docstring)."""
        out = [Layer("sink", "sink", None, self.t_sink, self.k_sink, self.p_sink),
               Layer("spreader", "spreader", None, self.t_spreader, self.k_spreader,
                     self.p_spreader),
               Layer("interface", "interface", None, self.t_interface, self.k_interface,
                     self.p_interface)]
        for i in range(self.tiers):
            if i:
                out.append(Layer(f"bond{i - 1}", "bond", i - 1, self.t_bond, self.k_bond,
                                 self.p_bond))
            out.append(Layer(f"tier{i}.bulk", "bulk", i, self.t_bulk, self.k_chip,
                             self.p_chip))
            out.append(Layer(f"tier{i}.active", "active", i, self.t_active, self.k_chip,
                             self.p_chip))
        return tuple(out)


@dataclass(frozen=True)
class Network:
    """The RC network of a :class:`Stack` (arrays read-only; built once per stack).

    Attributes
    ----------
    stack : Stack
        The stack it models.
    conductance : scipy.sparse.csc_array
        :math:`G`, ``n_nodes`` x ``n_nodes`` in W/K, symmetric; the diagonal includes the
        conductances to ambient. Node ``(layer, row, column)`` is
        ``(layer * ny + row) * nx + column``.
    capacitance : numpy.ndarray
        :math:`C`, per node, J/K.
    g_ambient : numpy.ndarray
        :math:`g_{amb}`, per node, W/K (non-zero on the sink layer only).
    active : numpy.ndarray
        ``[tiers, ny * nx]`` node indices of each tier's active layer, where power goes.
    """

    stack: Stack
    conductance: sp.csc_array
    capacitance: np.ndarray
    g_ambient: np.ndarray
    active: np.ndarray


@dataclass(frozen=True)
class SteadyResult:
    """What :func:`steady` returns. Temperatures in K, heat in W.

    Attributes
    ----------
    temperature : numpy.ndarray
        ``[n_layers, ny, nx]``: every node, layers from the sink outward.
    layers : tuple of Layer
        What each index of ``temperature``'s first axis is.
    active : numpy.ndarray
        ``[tiers, ny, nx]``: each tier's active layer.
    peak : float
        The hottest node (always on an active layer, where the heat enters).
    tier_peak, tier_mean : numpy.ndarray
        ``[tiers]``: each tier's active layer's hottest cell and mean.
    heat_to_ambient : float
        :math:`\\sum g_{amb} (T_{sink} - T_{amb})`; equals ``total_power``.
    total_power : float
        The power map's sum.
    """

    temperature: np.ndarray
    layers: tuple[Layer, ...]
    active: np.ndarray
    peak: float
    tier_peak: np.ndarray
    tier_mean: np.ndarray
    heat_to_ambient: float
    total_power: float


@dataclass(frozen=True)
class TransientResult:
    """What :func:`transient` returns. Temperatures in K, times in s.

    Attributes
    ----------
    times : numpy.ndarray
        ``[steps]``: the end of each step, ``(n + 1) * dt``.
    tier_peak : numpy.ndarray
        ``[steps, tiers]``: each tier's active-layer peak at the end of each step.
    peak : numpy.ndarray
        ``[steps]``: the hottest node at the end of each step.
    final : numpy.ndarray
        ``[n_layers, ny, nx]``: every node at the end; pass it as ``t0`` to continue.
    layers : tuple of Layer
        What each index of ``final``'s first axis is.
    """

    times: np.ndarray
    tier_peak: np.ndarray
    peak: np.ndarray
    final: np.ndarray
    layers: tuple[Layer, ...] = field(repr=False)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=32)
def _build(stack: Stack) -> Network:
    nl, ny, nx = stack.n_layers, stack.ny, stack.nx
    w, h, area = stack.tile_w, stack.tile_h, stack.cell_area
    layers = stack.layers()
    t = np.array([la.thickness for la in layers])
    k = np.array([la.conductivity for la in layers])
    p = np.array([la.heat_capacity for la in layers])
    idx = np.arange(stack.n_nodes).reshape(nl, ny, nx)

    pairs_a, pairs_b, gs = [], [], []

    def couple(a: np.ndarray, b: np.ndarray, g_layer: np.ndarray) -> None:
        # g_layer: one conductance per layer of a (broadcast over the layer's cells).
        pairs_a.append(a.ravel())
        pairs_b.append(b.ravel())
        gs.append(np.broadcast_to(g_layer[:, None, None], a.shape).ravel())

    if nx > 1:  # along a row: shared edge h, centre distance w
        couple(idx[:, :, :-1], idx[:, :, 1:], k * t * h / w)
    if ny > 1:  # along a column: shared edge w, centre distance h
        couple(idx[:, :-1, :], idx[:, 1:, :], k * t * w / h)
    # vertical: the two half-thicknesses in series
    couple(idx[:-1], idx[1:], area / (t[:-1] / (2 * k[:-1]) + t[1:] / (2 * k[1:])))

    a = np.concatenate(pairs_a)
    b = np.concatenate(pairs_b)
    g = np.concatenate(gs)
    n = stack.n_nodes
    g_amb = np.zeros(n)
    g_amb[idx[0].ravel()] = 1.0 / (stack.r_convec * nx * ny)
    diag = np.bincount(a, g, n) + np.bincount(b, g, n) + g_amb
    rows = np.concatenate([a, b, np.arange(n)])
    cols = np.concatenate([b, a, np.arange(n)])
    data = np.concatenate([-g, -g, diag])
    gmat = sp.csc_array((data, (rows, cols)), shape=(n, n))
    gmat.sum_duplicates()
    gmat.data.flags.writeable = False

    cap = np.repeat(p * t * area, ny * nx)
    cap[idx[0].ravel()] += C_FACTOR * stack.c_convec / (nx * ny)
    active = idx[[stack.active_layer(i) for i in range(stack.tiers)]].reshape(stack.tiers, -1)
    return Network(stack, gmat, _readonly(cap), _readonly(g_amb), _readonly(active))


def network(stack: Stack) -> Network:
    """Build (or fetch from a cache) the RC network of ``stack``.

    Parameters
    ----------
    stack : Stack
        The stack.

    Returns
    -------
    Network
        :math:`G`, :math:`C`, :math:`g_{amb}` and the active-layer node indices.
    """
    if not isinstance(stack, Stack):
        raise _fail("stack", "a Stack", stack)
    return _build(stack)


@functools.lru_cache(maxsize=32)
def _euler_factor(stack: Stack, dt: float):
    net = _build(stack)
    c_dt = net.capacitance / dt
    return splu((net.conductance + sp.diags_array(c_dt, format="csc")).tocsc()), c_dt


def _check_power(name: str, power: ArrayLike, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``power`` as floats, checked: its shape is ``shape``, where a leading ``-1`` stands for
    any length >= 1; finite and >= 0."""
    try:
        arr = np.asarray(power, dtype=float)
    except (TypeError, ValueError):
        raise _fail(name, f"an array of watts of shape {what}", power) from None
    if (arr.ndim != len(shape) or arr.size == 0
            or any(want not in (-1, got) for want, got in zip(shape, arr.shape, strict=True))):
        raise ValueError(f"{name} must have shape {what}; got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite and >= 0 (W) everywhere; got "
                         f"{float(arr[where])!r} at index {where}")
    return arr


def steady(stack: Stack, power: ArrayLike) -> SteadyResult:
    """Steady-state temperatures of ``stack`` under a power map.

    Solves :math:`G\\,T = P + g_{amb} T_{amb}` (as :math:`G\\,\\theta = P`) with
    :func:`scipy.sparse.linalg.spsolve`.

    Parameters
    ----------
    stack : Stack
        The stack.
    power : array_like
        ``[tiers, ny, nx]`` watts dissipated in each cell of each tier's active layer; finite
        and >= 0.

    Returns
    -------
    SteadyResult
        Every node's temperature, the peak, each tier's peak and mean, and the heat to
        ambient.

    Raises
    ------
    ValueError
        If ``power`` is not of that shape, or not finite and non-negative.
    """
    net = network(stack)
    shape = (stack.tiers, stack.ny, stack.nx)
    pw = _check_power("power", power, shape, f"(tiers, ny, nx) = {shape}")
    rhs = np.zeros(stack.n_nodes)
    rhs[net.active] = pw.reshape(stack.tiers, -1)
    theta = spsolve(net.conductance, rhs)
    temp = stack.ambient + theta
    act = temp[net.active]
    return SteadyResult(
        temperature=temp.reshape(stack.n_layers, stack.ny, stack.nx),
        layers=stack.layers(),
        active=act.reshape(shape),
        peak=float(temp.max()),
        tier_peak=act.max(axis=1),
        tier_mean=act.mean(axis=1),
        heat_to_ambient=float(net.g_ambient @ theta),
        total_power=float(pw.sum()),
    )


def transient(stack: Stack, power_trace: ArrayLike, dt: float,
              t0: float | ArrayLike | None = None) -> TransientResult:
    """Temperatures of ``stack`` over a power trace, by backward Euler.

    Integrates :math:`C\\,\\dot T = P - G\\,T + g_{amb} T_{amb}` as
    :math:`(C / \\Delta t + G)\\,\\theta_{n+1} = (C / \\Delta t)\\,\\theta_n + P_n`, the matrix
    factorised once by :func:`scipy.sparse.linalg.splu` (and cached per stack and ``dt``).

    Parameters
    ----------
    stack : Stack
        The stack.
    power_trace : array_like
        ``[steps, tiers, ny, nx]`` watts; step ``n`` holds over ``(n dt, (n + 1) dt]``.
        ``steps >= 1``; finite and >= 0.
    dt : float
        The step in s, > 0.
    t0 : float or array_like, optional
        The initial temperature in K: one value for every node, or ``[n_layers, ny, nx]``
        (e.g. a :class:`SteadyResult`'s ``temperature`` or a :class:`TransientResult`'s
        ``final``); finite and > 0. By default every node starts at ambient.

    Returns
    -------
    TransientResult
        Each tier's peak and the overall peak at the end of each step, and the final state.

    Raises
    ------
    ValueError
        If an argument is out of range or of the wrong shape.
    """
    net = network(stack)
    _check_real("dt", dt, "s")
    dt = float(dt)
    shape = (stack.tiers, stack.ny, stack.nx)
    trace = _check_power("power_trace", power_trace, (-1, *shape),
                         f"(steps >= 1, tiers, ny, nx) = (steps, {', '.join(map(str, shape))})")
    steps = trace.shape[0]
    theta = _initial(stack, t0)

    lu, c_dt = _euler_factor(stack, dt)
    active = net.active
    flat = trace.reshape(steps, stack.tiers, -1)
    tier_peak = np.empty((steps, stack.tiers))
    peak = np.empty(steps)
    for n in range(steps):
        rhs = c_dt * theta
        rhs[active] += flat[n]
        theta = lu.solve(rhs)
        tier_peak[n] = theta[active].max(axis=1)
        peak[n] = theta.max()
    return TransientResult(
        times=dt * np.arange(1, steps + 1),
        tier_peak=stack.ambient + tier_peak,
        peak=stack.ambient + peak,
        final=(stack.ambient + theta).reshape(stack.n_layers, stack.ny, stack.nx),
        layers=stack.layers(),
    )


def _initial(stack: Stack, t0) -> np.ndarray:
    shape = (stack.n_layers, stack.ny, stack.nx)
    if t0 is None:
        return np.zeros(stack.n_nodes)
    rule = f"a finite temperature > 0 (K), one or of shape (n_layers, ny, nx) = {shape}"
    try:
        arr = np.asarray(t0, dtype=float)
    except (TypeError, ValueError):
        raise _fail("t0", rule, t0) from None
    if arr.shape not in ((), shape):
        raise ValueError(f"t0 must be {rule}; got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        value = arr[tuple(np.argwhere(bad)[0])] if arr.ndim else arr
        raise _fail("t0", rule, float(value))
    return np.broadcast_to(arr - stack.ambient, shape).ravel().copy()
