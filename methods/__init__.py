"""One module per method; importing this package registers them all (see zsbench.registry)."""

from methods import (  # noqa: F401
    caae,
    cfsa,
    cvae,
    doodle2search,
    frozen,
    lcale,
    rpkd,
    sem_pcyc,
    sketchgcn,
    supervised,
)
