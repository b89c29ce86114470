"""One module per method; importing this package registers them all (see zsbench.registry)."""

from methods import caae, cfsa, cvae, frozen, lcale, rpkd, sem_pcyc, supervised  # noqa: F401
