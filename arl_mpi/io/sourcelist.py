"""CLEAN component lists in WSClean's text format (``-save-source-list``, DP3/BBS sky models).

The file starts with the header line ::

    Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, ReferenceFrequency='NU0',
    MajorAxis, MinorAxis, Orientation      (one line)

followed by one component a line, e.g. ``s0c0,POINT,03:22:41.789000,-37.12.29.52000,12.5,[-0.8],false,1.8e+08,,,``.
RA is ``hh:mm:ss.s``, Dec ``dd.mm.ss.s`` (J2000/ICRS); I is the flux density in Jy at the
reference frequency ``NU0`` (Hz). With ``LogarithmicSI`` false (what arl_mpi writes, as WSClean
does for its polynomial fits) the spectrum is the ordinary polynomial
``S(nu) = I + sum_k c_k (nu / NU0 - 1)^(k + 1)`` of the ``SpectralIndex`` terms ``[c_0, c_1, ...]``;
with true it is ``log10 S = log10 I + sum_k c_k log10(nu / NU0)^(k + 1)``. An empty field takes
the header's default (the reference frequency). arl_mpi's components are model pixels (point
components, named ``s0c<i>`` like WSClean's scale-0 components); with several frequency planes
the terms are a least-squares fit over the planes (``--fit-spectral-pol`` terms).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arl_mpi.errors import InputError
from arl_mpi.io.atomic import atomic_path
from arl_mpi.io.fits import read_fits
from arl_mpi.models import Image

log = logging.getLogger(__name__)

__all__ = ["Component", "components_from_model", "write_source_list", "read_source_list", "save_source_list",
           "format_ra", "format_dec", "parse_ra", "parse_dec"]

COLUMNS = ("Name", "Type", "Ra", "Dec", "I", "SpectralIndex", "LogarithmicSI", "ReferenceFrequency",
           "MajorAxis", "MinorAxis", "Orientation")


@dataclass
class Component:
    """One sky-model component.

    Attributes
    ----------
    name : str; kind : ``POINT`` or ``GAUSSIAN``
    ra_deg, dec_deg : position (ICRS degrees)
    flux : Stokes I (Jy) at ``ref_freq``
    terms : spectral terms ``[c_0, ...]`` (see the module docstring); log_si : their meaning
    ref_freq : Hz; major_asec, minor_asec, orientation_deg : Gaussian shape (None for a point)
    """

    name: str
    kind: str
    ra_deg: float
    dec_deg: float
    flux: float
    terms: tuple[float, ...]
    log_si: bool
    ref_freq: float
    major_asec: float | None = None
    minor_asec: float | None = None
    orientation_deg: float | None = None

    def flux_at(self, freq: np.ndarray | float) -> np.ndarray:
        """Stokes I flux density (Jy) at ``freq`` (Hz)."""
        f = np.asarray(freq, dtype=np.float64) / self.ref_freq
        if self.log_si:
            x = np.log10(f)
            return self.flux * 10.0 ** sum(c * x ** (k + 1) for k, c in enumerate(self.terms))
        x = f - 1.0
        return self.flux + sum(c * x ** (k + 1) for k, c in enumerate(self.terms)) + 0.0 * x


def format_ra(ra_deg: float) -> str:
    """``hh:mm:ss.ssssss`` (0 <= RA < 24 h)."""
    us = int(round((ra_deg % 360.0) / 15.0 * 3600e6)) % (24 * 3600 * 10**6)
    h, rem = divmod(us, 3600 * 10**6)
    m, rem = divmod(rem, 60 * 10**6)
    return f"{h:02d}:{m:02d}:{rem // 10**6:02d}.{rem % 10**6:06d}"


def format_dec(dec_deg: float) -> str:
    """``+dd.mm.ss.sssss`` (WSClean's dotted form)."""
    sign = "-" if dec_deg < 0 else "+"
    t = int(round(abs(dec_deg) * 3600e5))
    d, rem = divmod(t, 3600 * 10**5)
    m, rem = divmod(rem, 60 * 10**5)
    return f"{sign}{d:02d}.{m:02d}.{rem // 10**5:02d}.{rem % 10**5:05d}"


def _sexagesimal(text: str, sep: str, what: str) -> tuple[float, float]:
    parts = text.strip().split(sep)
    if len(parts) < 3:
        raise ValueError(f"{what} {text!r}: expected three {sep!r}-separated fields")
    head, minutes, seconds = parts[0], parts[1], sep.join(parts[2:]) if sep == ":" else ".".join(parts[2:])
    sign = -1.0 if head.strip().startswith("-") else 1.0
    value = abs(float(head)) + float(minutes) / 60.0 + float(seconds) / 3600.0
    return sign, value


def parse_ra(text: str) -> float:
    """Degrees from ``hh:mm:ss.s`` (a leading ``-`` negates, as some WSClean lists write)."""
    sign, hours = _sexagesimal(text, ":", "RA")
    return (sign * hours * 15.0) % 360.0


def parse_dec(text: str) -> float:
    """Degrees from ``dd.mm.ss.s`` (or ``dd:mm:ss.s``)."""
    sign, deg = _sexagesimal(text, ":" if ":" in text else ".", "Dec")
    return sign * deg


def components_from_model(img: Image, nterms: int = 2) -> tuple[list[Component], float]:
    """Point components of a model image (Jy/pixel): every pixel non-zero in some plane.

    Parameters
    ----------
    img : the model (``[nplane, 1, ny, nx]``, Stokes I)
    nterms : polynomial terms fitted over the planes (``--fit-spectral-pol``; at most nplane)

    Returns
    -------
    components, reference frequency (Hz: the mean of the planes' frequencies)
    """
    data = np.asarray(img.data[:, 0], dtype=np.float64)
    nplane = data.shape[0]
    freqs = np.atleast_1d(img.wcs.sub([3]).pixel_to_world_values(np.arange(nplane))).astype(np.float64)
    ref = float(freqs.mean())
    ys, xs = np.nonzero(np.any(data != 0, axis=0))
    if xs.size == 0:
        return [], ref
    ra, dec = img.wcs.celestial.pixel_to_world_values(xs.astype(np.float64), ys.astype(np.float64))
    fluxes = data[:, ys, xs]  # [nplane, ncomp]
    n = max(1, min(int(nterms), nplane))
    if nplane == 1:
        coef = fluxes
    else:
        design = (freqs / ref - 1.0)[:, None] ** np.arange(n)[None, :]
        coef = np.linalg.lstsq(design, fluxes, rcond=None)[0]  # [n, ncomp]
    comps = [Component(name=f"s0c{i}", kind="POINT", ra_deg=float(np.atleast_1d(ra)[i]),
                       dec_deg=float(np.atleast_1d(dec)[i]), flux=float(coef[0, i]),
                       terms=tuple(float(c) for c in coef[1:, i]), log_si=False, ref_freq=ref)
             for i in range(xs.size)]
    return comps, ref


def _num(x: float) -> str:
    return repr(float(x))


def write_source_list(path: str | os.PathLike, components: list[Component], ref_freq: float) -> Path:
    """Write ``components`` in WSClean's format, atomically (temporary name, then rename)."""
    lines = [f"Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, ReferenceFrequency='{_num(ref_freq)}', "
             "MajorAxis, MinorAxis, Orientation"]
    for c in components:
        shape = ",".join("" if v is None else _num(v) for v in (c.major_asec, c.minor_asec, c.orientation_deg))
        lines.append(f"{c.name},{c.kind},{format_ra(c.ra_deg)},{format_dec(c.dec_deg)},{_num(c.flux)},"
                     f"[{','.join(_num(t) for t in c.terms)}],{'true' if c.log_si else 'false'},"
                     f"{_num(c.ref_freq)},{shape}")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return Path(path)


def _fields(line: str) -> list[str]:
    """Split on commas outside square brackets."""
    out, depth, cur = [], 0, []
    for ch in line:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _opt(values: dict[str, str], key: str) -> float | None:
    return float(values[key]) if values.get(key) else None


def read_source_list(path: str | os.PathLike) -> list[Component]:
    """Read a component list in WSClean's format (the columns in the header's order).

    Raises
    ------
    InputError
        One line naming the file (and line) when it is missing or malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such source list")
    text = p.read_text().splitlines()
    header = next((i for i, t in enumerate(text) if t.strip() and not t.lstrip().startswith("#")), None)
    if header is None or not re.match(r"\s*format\s*=", text[header], re.I):
        raise InputError(f"{p}: not a source list (no 'Format = ...' header)")
    cols, defaults = [], {}
    for item in _fields(text[header].split("=", 1)[1]):
        m = re.fullmatch(r"\s*(\w+)\s*(?:=\s*'([^']*)')?\s*", item)
        if not m:
            raise InputError(f"{p}: bad header column {item!r}")
        cols.append(m.group(1).lower())
        if m.group(2) is not None:
            defaults[m.group(1).lower()] = m.group(2)
    out = []
    for ln, line in enumerate(text[header + 1:], start=header + 2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        vals = dict(zip(cols, _fields(line), strict=False))
        get = {k: (vals.get(k) or defaults.get(k, "")) for k in cols}
        try:
            if not get.get("type"):
                continue  # a patch line (empty name/type)
            terms = tuple(float(t) for t in get.get("spectralindex", "").strip("[] ").split(",") if t.strip())
            out.append(Component(
                name=get.get("name", ""), kind=get["type"].upper(), ra_deg=parse_ra(get["ra"]),
                dec_deg=parse_dec(get["dec"]), flux=float(get["i"]), terms=terms,
                log_si=get.get("logarithmicsi", "true").strip().lower() != "false",
                ref_freq=float(get["referencefrequency"]), major_asec=_opt(get, "majoraxis"),
                minor_asec=_opt(get, "minoraxis"), orientation_deg=_opt(get, "orientation")))
        except (KeyError, ValueError) as e:
            raise InputError(f"{p}: line {ln}: cannot read component ({e})") from None
    return out


def save_source_list(prefix: str, nterms: int = 2) -> Path:
    """``-save-source-list``: the components of ``PREFIX-model.fits`` as ``PREFIX-sources.txt``."""
    img = read_fits(f"{prefix}-model.fits")
    comps, ref = components_from_model(img, nterms)
    path = write_source_list(f"{prefix}-sources.txt", comps, ref)
    log.info("wrote %d components to %s", len(comps), path)
    return path
