"""Real, published antenna/station layouts shipped as package data.

Each layout is a small text file in ``arl_mpi/simulation/data/<name>.txt`` with a
``#`` comment header (array, source package/version/path, reference, licence,
frame, site) followed by whitespace separated columns::

    name  X  Y  Z  diameter

X, Y, Z are ITRF (Earth-centred, Earth-fixed) metres; diameter is in metres.
The header carries three machine-readable lines::

    # site_lon_deg: <float>
    # site_lat_deg: <float>
    # site_height_m: <float>
    # source: <one line citation>

Usage::

    >>> from arl_mpi.simulation.layouts import available_layouts, read_layout
    >>> lay = read_layout("VLAA")
    >>> lay.xyz.shape
    (27, 3)

Coordinate helpers (pure numpy, WGS84): :func:`geodetic_to_itrf`,
:func:`itrf_to_geodetic`, :func:`itrf_to_enu`, :func:`enu_to_itrf`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np

__all__ = [
    "Layout",
    "available_layouts",
    "read_layout",
    "geodetic_to_itrf",
    "itrf_to_geodetic",
    "itrf_to_enu",
    "enu_to_itrf",
]

# WGS84 ellipsoid
_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_WGS84_E2 = _WGS84_F * (2.0 - _WGS84_F)

# Canonical layout name -> data file name (without .txt)
_FILES = {
    "LOW": "LOW",
    "LOW-CORE": "LOW-CORE",
    "MID": "MID",
    "MEERKAT": "MEERKAT",
    "VLAA": "VLAA",
    "VLAB": "VLAB",
    "VLAC": "VLAC",
    "VLAD": "VLAD",
    "LOFAR-CORE": "LOFAR-CORE",
}

# Extra accepted spellings (upper-case) -> canonical name
_ALIASES = {
    "SKA1-LOW": "LOW",
    "SKA-LOW": "LOW",
    "LOWCORE": "LOW-CORE",
    "SKA1-LOW-CORE": "LOW-CORE",
    "SKA1-MID": "MID",
    "SKA-MID": "MID",
    "VLA-A": "VLAA",
    "VLA-B": "VLAB",
    "VLA-C": "VLAC",
    "VLA-D": "VLAD",
    "LOFARCORE": "LOFAR-CORE",
}


@dataclass(frozen=True, eq=False)
class Layout:
    """An antenna/station layout.

    Attributes
    ----------
    name : canonical layout name (e.g. ``"VLAA"``)
    names : antenna/station names
    xyz : [nant, 3] float64 ITRF (ECEF) positions in metres
    diameter : [nant] dish/station diameters in metres
    site_lon_deg, site_lat_deg, site_height_m : documented array reference position
        (WGS84 geodetic)
    source : one-line citation of where the numbers come from
    """

    name: str
    names: list[str]
    xyz: np.ndarray
    diameter: np.ndarray
    site_lon_deg: float
    site_lat_deg: float
    site_height_m: float
    source: str
    header: str = field(default="", repr=False, compare=False)

    @property
    def nant(self) -> int:
        return len(self.names)

    @property
    def site_xyz(self) -> np.ndarray:
        """ITRF position (m) of the documented site."""
        return geodetic_to_itrf(self.site_lon_deg, self.site_lat_deg, self.site_height_m)

    def enu(self) -> np.ndarray:
        """[nant, 3] local East/North/Up (m) relative to the documented site."""
        return itrf_to_enu(self.xyz, self.site_lon_deg, self.site_lat_deg, self.site_height_m)


# ---------------------------------------------------------------------------
# Coordinate conversions (WGS84, pure numpy)
# ---------------------------------------------------------------------------


def geodetic_to_itrf(lon_deg, lat_deg, height_m) -> np.ndarray:
    """WGS84 geodetic longitude/latitude (deg) and ellipsoidal height (m) to ITRF XYZ (m).

    Broadcasts; returns an array of shape ``broadcast_shape + (3,)``.
    """
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    h = np.asarray(height_m, dtype=np.float64)
    sinlat, coslat = np.sin(lat), np.cos(lat)
    n = _WGS84_A / np.sqrt(1.0 - _WGS84_E2 * sinlat**2)
    x = (n + h) * coslat * np.cos(lon)
    y = (n + h) * coslat * np.sin(lon)
    z = (n * (1.0 - _WGS84_E2) + h) * sinlat
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def itrf_to_geodetic(xyz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ITRF XYZ (m), shape [..., 3], to WGS84 (lon_deg, lat_deg, height_m).

    Iterative solution; converges to far below a micrometre for terrestrial points.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    lat = np.arctan2(z, p * (1.0 - _WGS84_E2))
    h = np.zeros_like(p)
    for _ in range(10):
        sinlat = np.sin(lat)
        n = _WGS84_A / np.sqrt(1.0 - _WGS84_E2 * sinlat**2)
        h = p / np.cos(lat) - n
        lat = np.arctan2(z, p * (1.0 - _WGS84_E2 * n / (n + h)))
    sinlat = np.sin(lat)
    n = _WGS84_A / np.sqrt(1.0 - _WGS84_E2 * sinlat**2)
    h = p / np.cos(lat) - n
    return np.degrees(lon), np.degrees(lat), h


def _enu_rotation(lon_deg: float, lat_deg: float) -> np.ndarray:
    """3x3 matrix whose rows are the E, N, U unit vectors in ITRF."""
    lon = np.radians(float(lon_deg))
    lat = np.radians(float(lat_deg))
    sl, cl = np.sin(lon), np.cos(lon)
    sp, cp = np.sin(lat), np.cos(lat)
    return np.array(
        [
            [-sl, cl, 0.0],
            [-sp * cl, -sp * sl, cp],
            [cp * cl, cp * sl, sp],
        ]
    )


def itrf_to_enu(xyz, lon_deg: float, lat_deg: float, height_m: float) -> np.ndarray:
    """ITRF positions [nant, 3] (m) to local East/North/Up [nant, 3] (m).

    The ENU frame is the WGS84 tangent plane at the geodetic reference position
    (lon_deg, lat_deg, height_m).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    ref = geodetic_to_itrf(lon_deg, lat_deg, height_m)
    return (xyz - ref) @ _enu_rotation(lon_deg, lat_deg).T


def enu_to_itrf(enu, lon_deg: float, lat_deg: float, height_m: float) -> np.ndarray:
    """Inverse of :func:`itrf_to_enu`: local ENU [nant, 3] (m) to ITRF [nant, 3] (m)."""
    enu = np.asarray(enu, dtype=np.float64)
    ref = geodetic_to_itrf(lon_deg, lat_deg, height_m)
    return enu @ _enu_rotation(lon_deg, lat_deg) + ref


# ---------------------------------------------------------------------------
# Reading layouts
# ---------------------------------------------------------------------------


def available_layouts() -> list[str]:
    """Canonical names of the layouts shipped with the package (sorted)."""
    return sorted(_FILES)


def _canonical(name: str) -> str:
    key = str(name).strip().upper().replace("_", "-")
    if key in _FILES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(
        f"Unknown layout {name!r}; available layouts: {', '.join(available_layouts())}"
    )


def _parse(text: str):
    meta: dict[str, str] = {}
    header_lines = []
    names, rows = [], []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            header_lines.append(line)
            body = s.lstrip("#").strip()
            key, sep, val = body.partition(":")
            if sep and key.strip() in (
                "site_lon_deg",
                "site_lat_deg",
                "site_height_m",
                "source",
            ):
                meta[key.strip()] = val.strip()
            continue
        parts = s.split()
        if len(parts) != 5:
            raise ValueError(f"Malformed layout line: {line!r}")
        names.append(parts[0])
        rows.append([float(v) for v in parts[1:]])
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return meta, "\n".join(header_lines), names, arr


def read_layout(name: str, rmax_m: float | None = None) -> Layout:
    """Read a shipped layout by name (case-insensitive).

    Parameters
    ----------
    name : one of :func:`available_layouts` (or an alias such as ``"SKA1-MID"``)
    rmax_m : if given, keep only antennas whose 3-D distance from the array centre
        (the documented site position) is at most ``rmax_m`` metres.

    Raises
    ------
    ValueError : unknown name (the message lists the available layouts).
    """
    canon = _canonical(name)
    fname = f"{_FILES[canon]}.txt"
    text = resources.files("arl_mpi.simulation").joinpath("data", fname).read_text("utf-8")
    meta, header, names, arr = _parse(text)
    lon = float(meta["site_lon_deg"])
    lat = float(meta["site_lat_deg"])
    hgt = float(meta["site_height_m"])
    xyz = np.ascontiguousarray(arr[:, :3])
    diam = np.ascontiguousarray(arr[:, 3])
    if rmax_m is not None:
        centre = geodetic_to_itrf(lon, lat, hgt)
        r = np.linalg.norm(xyz - centre, axis=1)
        keep = r <= float(rmax_m)
        xyz, diam = xyz[keep], diam[keep]
        names = [n for n, k in zip(names, keep, strict=True) if k]
    return Layout(
        name=canon,
        names=names,
        xyz=xyz,
        diameter=diam,
        site_lon_deg=lon,
        site_lat_deg=lat,
        site_height_m=hgt,
        source=meta.get("source", ""),
        header=header,
    )
