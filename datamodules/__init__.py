"""One module per dataset family; importing this package registers them (see zsbench.registry)."""

from datamodules import cir, quickdraw, sketchy, synthetic, tuberlin  # noqa: F401
