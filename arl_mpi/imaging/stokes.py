"""Correlation products to Stokes parameters (IAU / Measurement Set conventions).

Linear feeds:   I = (XX + YY)/2, Q = (XX - YY)/2, U = (XY + YX)/2, V = (XY - YX)/(2i)
Circular feeds: I = (RR + LL)/2, V = (RR - LL)/2, Q = (RL + LR)/2, U = (RL - LR)/(2i)

(equivalently XX = I + Q, YY = I - Q, XY = U + iV, YX = U - iV, RR = I + V, LL = I - V,
RL = Q + iU, LR = Q - iU). Each Stokes visibility is ``(a + s b) / 2`` of two correlations
(s = +-1 or -+i); with independent noise of variance 1/w_a and 1/w_b its weight is
``4 w_a w_b / (w_a + w_b)`` (0 if either is 0), and it is flagged if either input is.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["to_stokes", "STOKES_DEFINITIONS"]

# stokes -> list of alternative (corr_a, corr_b, coefficient of b)
STOKES_DEFINITIONS: dict[str, list[tuple[str, str, complex]]] = {
    "I": [("XX", "YY", 1.0), ("RR", "LL", 1.0)],
    "Q": [("XX", "YY", -1.0), ("RL", "LR", 1.0)],
    "U": [("XY", "YX", 1.0), ("RL", "LR", -1.0)],
    "V": [("XY", "YX", -1.0), ("RR", "LL", -1.0)],
}
# factor applied to (a + s b) / 2: U from circular and V from linear carry 1/i = -i
_IMAG = {("U", "RL"), ("V", "XY")}


def to_stokes(
    vis: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray,
    pol_labels: list[str],
    stokes: str = "I",
    vis_dtype: type = np.complex128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Form one Stokes parameter from correlation products.

    Parameters
    ----------
    vis : ndarray [nrow, nchan, npol] complex
    weight : ndarray [nrow, nchan, npol] float
    flags : ndarray [nrow, nchan, npol] bool (True = flagged)
    pol_labels : list of str
        Correlation labels in the order of the last axis, e.g. ``['XX', 'XY', 'YX', 'YY']``,
        ``['XX', 'YY']``, ``['RR', 'RL', 'LR', 'LL']`` or ``['RR', 'LL']``.
    stokes : {'I', 'Q', 'U', 'V'}
    vis_dtype : complex dtype of ``vis_s``. With complex64 inputs, complex64 gives the same
        values as complex128 rounded to complex64 (``(a +- b) / 2`` and the factors of i are exact
        in either), without the double-precision temporaries.

    Returns
    -------
    vis_s : ndarray [nrow, nchan] ``vis_dtype``
    weight_s : ndarray [nrow, nchan] float64
    flags_s : ndarray [nrow, nchan] bool

    Raises
    ------
    ValueError
        Unknown Stokes parameter, or the correlations needed are not present.
    """
    stokes = stokes.upper()
    if stokes not in STOKES_DEFINITIONS:
        raise ValueError(f"unknown Stokes parameter {stokes!r}; use one of I, Q, U, V")
    labels = [p.upper() for p in pol_labels]
    vis = np.asarray(vis)
    if vis.ndim != 3 or vis.shape[2] != len(labels):
        raise ValueError(f"vis must be [nrow, nchan, npol={len(labels)}], got {vis.shape}")
    found = [d for d in STOKES_DEFINITIONS[stokes] if d[0] in labels and d[1] in labels]
    if not found:
        need = " or ".join(f"{a}+{b}" for a, b, _ in STOKES_DEFINITIONS[stokes])
        raise ValueError(f"Stokes {stokes} needs correlations {need}; have {labels}")
    a, b, s = found[0]
    ia, ib = labels.index(a), labels.index(b)
    out = vis[..., ia].astype(vis_dtype)
    if s == 1.0:
        out += vis[..., ib]
    elif s == -1.0:
        out -= vis[..., ib]
    else:
        out += np.asarray(s, dtype=vis_dtype) * vis[..., ib]
    out *= 0.5
    if (stokes, a) in _IMAG:
        out *= np.asarray(-1j, dtype=vis_dtype)
    weight = np.asarray(weight, dtype=np.float64)
    wa, wb = weight[..., ia], weight[..., ib]
    denom = wa + wb
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((wa > 0) & (wb > 0), 4.0 * wa * wb / np.where(denom > 0, denom, 1.0), 0.0)
    flags = np.asarray(flags, dtype=bool)
    fl = flags[..., ia] | flags[..., ib]
    return out, w, fl
