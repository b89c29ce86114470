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
    lincir,
    pic2word,
    rpkd,
    rtd,
    searle,
    sem_pcyc,
    sketchgcn,
    supervised,
)
