"""``heterotron fpga synth``: out-of-context synthesis and place and route of one unit."""

from __future__ import annotations

import json

from heterotron.scripts.common import Commands, UsageError, add_unit_args, fmt_params, resolve_unit

__all__ = ["add_commands"]


def cmd_fpga_synth(args) -> int:
    from heterotron.sim.flows.build import generate
    from heterotron.sim.flows.fpga import fpga_synth

    unit, params = resolve_unit(args)
    gen = generate(unit, params)
    try:
        fig = fpga_synth(gen.verilog, gen.module, args.device, args.freq)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fig = {"unit": unit.name, "params": params, **fig}
    if args.json:
        print(json.dumps(fig, indent=2))
        return 0
    a = fig["available"]
    print(f"{unit.name} [{fmt_params(params)}] on {fig['device']} (out of context):")
    print(f"  Fmax        {fig['fmax_mhz']} MHz "
          f"({'meets' if fig['timing_met'] else 'misses'} {fig['constraint_mhz']:g} MHz)")
    print(f"  LUT4/logic  {fig['luts']} / {a['luts']}")
    print(f"  flip-flops  {fig['ffs']} / {a['ffs']}")
    print(f"  DSP (MULT18X18D) {fig['dsps']} / {a['dsps']}")
    print(f"  block RAM   {fig['brams']} / {a['brams']}")
    cp = fig.get("critical_path")
    if cp:
        print(f"  critical path {cp['total_ns']} ns ({cp['logic_ns']} logic, {cp['routing_ns']} "
              f"routing): {cp['from']} -> {cp['to']}")
    print(f"  tools: {fig['tools']}, LUT mapping {fig['lut_mapper']}; "
          f"synth {fig['synth_seconds']} s, place and route {fig['pnr_seconds']} s")
    return 0


def add_commands(commands: Commands) -> None:
    from heterotron.sim.flows.fpga import DEVICES

    commands.group("fpga", "FPGA flows")
    p = commands.command("synth", "out-of-context synthesis and place and route of one unit: "
                         "LUTs, flip-flops, DSPs, block RAMs, Fmax", cmd_fpga_synth, group="fpga")
    add_unit_args(p)
    p.add_argument("--device", choices=tuple(DEVICES), default="ecp5-85f",
                   help="(default: %(default)s)")
    p.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                   help="clock constraint for place and route (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
