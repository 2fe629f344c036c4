"""The architecture-scale model (layer 3): cycles, energy and temperature of accelerator
configurations far larger than an RTL simulation reaches, calibrated against the RTL's own
counters; sweeps over description parameters on Dask."""
