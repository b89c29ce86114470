"""The version of the metric definitions, stamped into every result's spec.

Apart from zsbench.metrics (which imports torch) so that the leaderboard and the report, which
label results computed under an older definition, start without importing torch.
"""

METRICS_VERSION = "2.0"  # 2.0: paper specs take the expected value over tie orders
