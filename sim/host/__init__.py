"""The host side: one driver for the accelerator over any byte transport (a serial port on a
board, the simulated host port in cocotb)."""
