"""The accelerator's tiles: each a unit behind the packet interface of
:mod:`heterotron.hdl.tiles.common`."""
