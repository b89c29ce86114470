"""Methods: one module per method (installed as `zsbench.methods`).

Each is found by name through its `zsbench.methods` entry point in pyproject.toml and imported
only when used (see zsbench.registry); this package imports nothing on its own.
"""
