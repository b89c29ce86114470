"""CIRR rc2 (Liu et al., ICCV 2021), read by zsbench.cir_readers.read_cirr; layout and
download: docs/cir.md."""

from __future__ import annotations

from zsbench.cir_readers import read_cirr
from zsbench.datamodules.real_cir import RealCIRDataModule


class CIRR(RealCIRDataModule):
    """CIRR rc2 (Liu et al., ICCV 2021): R@1/5/10/50 without the reference, R_subset@1/2/3."""

    protocol = "cirr"
    markers = ("captions", "cirr/captions")
    reader = read_cirr
