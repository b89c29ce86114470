"""Methods: one module per method (installed as `zsbench.methods`).

Each is found by name through its `zsbench.methods` entry point in pyproject.toml and imported
only when used (see zsbench.registry); this package imports nothing on its own. What several
methods share has its own module, never another method's file: `base` (the method bases),
`blocks` (layers and losses), `pseudo_word` (SEARLE / LinCIR / RTD's phi and query side),
`sketch_conditioned` (CVAE / CAAE's generator).
"""
