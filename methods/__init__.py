"""One module per method; importing this package registers them all (see zsbench.registry)."""

from methods import frozen, supervised  # noqa: F401
