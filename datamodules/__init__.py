"""Datasets: one module per dataset family (installed as `zsbench.datamodules`).

Each is found by name through its `zsbench.datasets` entry point in pyproject.toml and imported
only when used (see zsbench.registry); this package imports nothing on its own.
"""
