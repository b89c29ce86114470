"""One module per method; importing this package registers them all (see zsbench.registry)."""

from methods import (  # noqa: F401
    caae,
    cfsa,
    clip_zeroshot,
    cvae,
    doodle2search,
    drcpl,
    frozen,
    lcale,
    rpkd,
    sem_pcyc,
    sketchgcn,
    supervised,
)
