"""zsbench: one protocol, one evaluator and one leaderboard for ZS-SBIR and ZS-CIR methods.

The evaluator as a library (imported on first use, so ``import zsbench`` stays light)::

    from zsbench import evaluate_sbir, evaluate_cir, SBIRRetrieval, CIRRetrieval, CIRLabels
"""

__version__ = "0.1.0"

# public name -> module that defines it (PEP 562 lazy attributes)
_EXPORTS = {
    "evaluate_sbir": "zsbench.evaluation",
    "evaluate_cir": "zsbench.evaluation",
    "similarity_matrix": "zsbench.evaluation",
    "get_spec": "zsbench.metrics",
    "METRIC_SPECS": "zsbench.metrics",
    "CIRLabels": "zsbench.metrics.cir",
    "get_cir_spec": "zsbench.metrics.cir_specs",
    "SBIRRetrieval": "zsbench.metrics.retrieval_metric",
    "CIRRetrieval": "zsbench.metrics.retrieval_metric",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zsbench' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
