"""Keep astropy from reaching the network: HPC compute nodes are often offline."""

from __future__ import annotations

import warnings


def configure_astropy_offline() -> None:
    """Use only the IERS tables bundled with astropy; never download anything.

    Earth-orientation values beyond the bundled table are extrapolated (sub-millimetre
    effect on km baselines for dates within a few months of the table; documented in
    docs/architecture.md).
    """
    from astropy.utils import iers
    from astropy.utils.data import conf as data_conf

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    iers.conf.iers_degraded_accuracy = "warn"
    data_conf.allow_internet = False
    try:
        from erfa import ErfaWarning

        warnings.filterwarnings("ignore", category=ErfaWarning)
    except ImportError:  # pragma: no cover
        pass
    try:
        from astropy.utils.iers import IERSDegradedAccuracyWarning

        warnings.filterwarnings("ignore", category=IERSDegradedAccuracyWarning)
    except ImportError:  # pragma: no cover
        pass
