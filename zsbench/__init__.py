"""zsbench: one protocol, one evaluator and one leaderboard for ZS-SBIR and ZS-CIR methods."""

__version__ = "0.1.0"
