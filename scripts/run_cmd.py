"""``heterotron run minilm``: MiniLM layers compiled for an accelerator description, run and
checked stage by stage against the integer encoder."""

from __future__ import annotations

import json
import sys

from heterotron.scripts.common import ConfigError, UsageError, load_config

__all__ = ["add_commands", "cmd_run"]

#: The description ``run minilm`` compiles for when ``--config`` is not given.
DEFAULT_ENCODER = "encoder"


def add_commands(commands) -> None:
    p = commands.command("run", "compile MiniLM for an accelerator description and run it: "
                         "every stage against the integer encoder, the program's size, and "
                         "(all six layers) the sentence embedding against float MiniLM",
                         cmd_run)
    p.add_argument("model", choices=("minilm",))
    p.add_argument("--layers", type=int, default=1, help="layers from layer 0, 1-6 "
                   "(default: %(default)s)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--tokens", type=int, default=8,
                     help="run the first T tokens of the shipped paragraphs, 3-128 (default: "
                          "%(default)s)")
    src.add_argument("--sentence", help="run this sentence instead")
    p.add_argument("--config", default=DEFAULT_ENCODER, metavar="NAME|FILE.toml",
                   help="the accelerator description (default: %(default)s)")
    p.add_argument("--params", metavar="FILE.npz",
                   help="the integer parameter set (heterotron accuracy's minilm-int.npz; "
                        "default: built once from the shipped calibration)")
    p.add_argument("--golden", action="store_true",
                   help="run the program in the program interpreter only (default: also on "
                        "the RTL in Verilator, judged against the interpreter: a model build "
                        "of about 5 min, cached, then about 6 min a layer on the default "
                        "description)")
    p.add_argument("--whole-memory", action="store_true",
                   help="on the RTL, also read back and compare every byte of the scratchpad "
                        "images, not only the tensors the program writes (about 2M more "
                        "cycles a layer: the weights)")
    p.add_argument("--load", choices=("backdoor", "host"), default="backdoor",
                   help="how the scratchpad images reach the RTL: straight into the "
                        "scratchpads through the simulation harness, a word a cycle "
                        "(backdoor), or through the host link, a byte a cycle, as on a board "
                        "(host; about 2M more cycles a layer). Default: %(default)s")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")


def cmd_run(args) -> int:
    from heterotron.hdl.accelerator import describe
    from heterotron.hdl.contract.accel import DescriptionError
    from heterotron.sim.flows.encoder import EncoderRunError, format_report, run_minilm
    from heterotron.sim.golden.compiler import CompileError

    source, config = load_config(args.config)
    if "accelerator" not in config:
        raise ConfigError(f"{source}: no [accelerator] table (run minilm needs a description "
                          "with PiM, SFU and SA tiles, e.g. --config encoder)")
    try:
        desc = describe(config["accelerator"])
    except DescriptionError as exc:
        raise ConfigError(f"{source}: {exc}") from None

    def progress(msg):
        print(f"[heterotron] {msg}", file=sys.stderr, flush=True)
    try:
        report = run_minilm(desc, layers=args.layers, tokens=args.tokens,
                            sentence=args.sentence, params=args.params, golden=args.golden,
                            whole_memory=args.whole_memory, load=args.load,
                            progress=progress)
    except (EncoderRunError, CompileError) as exc:
        raise UsageError(f"{source}: {exc}") from None
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0 if report["bit_exact"] else 1
