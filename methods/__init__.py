"""One module per method; importing this package registers them all (see zsbench.registry)."""

from methods import caae, cvae, frozen, rpkd, sem_pcyc, supervised  # noqa: F401
