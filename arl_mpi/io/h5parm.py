"""h5parm: the gain-solution format of DP3, LoSoTo and WSClean (plain HDF5, read and written with h5py).

Layout (``docs/formats.md`` maps it onto our own gain table)::

    FILE.h5
      sol000/                       a *solset* (attribute ``h5parm_version``)
        antenna                     compound table: name (S16), position (float32[3], ITRF m)
        source                      compound table: name (S128), dir (float32[2], RA/Dec rad)
        phase000/                   a *soltab*; attribute TITLE = solution type
          time freq ant pol dir     one dataset per axis (MJD s, Hz, names, labels, names)
          val                       [axes...] float64; attribute AXES = "time,freq,ant,pol,dir"
          weight                    same shape and AXES; 0 = flagged
        amplitude000/               ...

This module knows only the file format: :class:`Solset` / :class:`Soltab` hold what is in the
file, axis order included. Turning soltabs into antenna gains is the calibration layer's job
(:mod:`arl_mpi.calibration.gaintable`, :mod:`arl_mpi.calibration.apply`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from arl_mpi.errors import InputError
from arl_mpi.io.atomic import atomic_h5

log = logging.getLogger(__name__)

H5PARM_VERSION = "1.0"
#: Axis names of the standard; the order of a soltab's axes is free (its AXES attribute says it).
KNOWN_AXES = ("time", "freq", "ant", "pol", "dir")
_ANTENNA_DTYPE = np.dtype([("name", "S16"), ("position", "<f4", (3,))])
_SOURCE_DTYPE = np.dtype([("name", "S128"), ("dir", "<f4", (2,))])
_STRING_AXES = ("ant", "pol", "dir")
_STRING_WIDTH = {"ant": 16, "dir": 128, "pol": 2}


class H5parmError(InputError):
    """An h5parm file that cannot be used; the message names the file and the soltab or axis."""


@dataclass
class Soltab:
    """One solution table: values on named axes.

    Attributes
    ----------
    soltype : str, the TITLE attribute (``phase``, ``amplitude``, ``scalarphase``, ``tec`` ...)
    axes : tuple of str, axis names in the order of ``val``'s dimensions
    coords : dict axis name -> 1-D array (time: MJD s, freq: Hz, ant/pol/dir: str)
    val : ndarray float, shape ``[len(coords[a]) for a in axes]`` (phase in rad)
    weight : ndarray float, same shape; 0 marks a flagged solution
    attrs : extra attributes of the soltab group (written as they are)
    """

    soltype: str
    axes: tuple[str, ...]
    coords: dict[str, np.ndarray]
    val: np.ndarray
    weight: np.ndarray
    attrs: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = tuple(str(a) for a in self.axes)
        self.val = np.asarray(self.val, dtype=np.float64)
        self.weight = np.asarray(self.weight, dtype=np.float64)
        for a in self.axes:
            if a not in self.coords:
                raise ValueError(f"Soltab: axis {a!r} has no coordinate values")
        shape = tuple(len(self.coords[a]) for a in self.axes)
        if self.val.shape != shape or self.weight.shape != shape:
            raise ValueError(f"Soltab: val {self.val.shape} / weight {self.weight.shape} != axes {shape}")


@dataclass
class Solset:
    """A solution set: antenna and source tables and named soltabs."""

    antenna_names: list[str]
    antenna_positions: np.ndarray
    source_names: list[str]
    source_dirs: np.ndarray
    soltabs: dict[str, Soltab]
    name: str = "sol000"
    attrs: dict[str, object] = field(default_factory=dict)


def _strings(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()], dtype=str)


def write_h5parm(path: str | os.PathLike, solset: Solset) -> Path:
    """Write one solset as a new h5parm file, atomically (temporary name, then rename).

    Parameters
    ----------
    path : destination file (replaced if it exists)
    solset : what to write

    Returns
    -------
    pathlib.Path, the file written
    """
    path = Path(path)
    with atomic_h5(path) as f:
        g = f.create_group(solset.name)
        g.attrs["h5parm_version"] = np.bytes_(H5PARM_VERSION)
        for k, v in solset.attrs.items():
            g.attrs[k] = v
        ant = np.zeros(len(solset.antenna_names), dtype=_ANTENNA_DTYPE)
        ant["name"] = [n.encode() for n in solset.antenna_names]
        ant["position"] = np.asarray(solset.antenna_positions, dtype=np.float32).reshape(-1, 3)
        src = np.zeros(len(solset.source_names), dtype=_SOURCE_DTYPE)
        src["name"] = [n.encode() for n in solset.source_names]
        src["dir"] = np.asarray(solset.source_dirs, dtype=np.float32).reshape(-1, 2)
        for name, table in (("antenna", ant), ("source", src)):
            d = g.create_dataset(name, data=table)
            # PyTables' table attributes, so that LoSoTo (PyTables) sees a Table
            d.attrs["CLASS"] = np.bytes_("TABLE")
            d.attrs["VERSION"] = np.bytes_("2.7")
            d.attrs["TITLE"] = np.bytes_(name)
            for i, fname in enumerate(table.dtype.names):
                d.attrs[f"FIELD_{i}_NAME"] = np.bytes_(fname)
        for tname, st in solset.soltabs.items():
            t = g.create_group(tname)
            t.attrs["TITLE"] = np.bytes_(st.soltype)
            t.attrs["h5parm_version"] = np.bytes_(H5PARM_VERSION)
            for k, v in st.attrs.items():
                t.attrs[k] = v
            for a in st.axes:
                c = np.asarray(st.coords[a])
                if a in _STRING_AXES or c.dtype.kind in "USO":
                    # the widths of the antenna/source tables' names (and pol 2), as DP3 writes them
                    width = max([len(x) for x in _strings(c)] + [_STRING_WIDTH.get(a, 1)])
                    c = np.array([x.encode() for x in _strings(c)], dtype=f"S{width}")
                else:
                    c = c.astype(np.float64)
                t.create_dataset(a, data=c)
            axes = np.bytes_(",".join(st.axes))
            for dname, data in (("val", st.val), ("weight", st.weight)):
                d = t.create_dataset(dname, data=data)
                d.attrs["AXES"] = axes
    log.debug("wrote h5parm %s (%s)", path, ", ".join(solset.soltabs))
    return path


def _attr_str(obj, name: str) -> str | None:
    v = obj.attrs.get(name)
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        v = v.ravel()[0] if v.size else b""
    return v.decode() if isinstance(v, bytes | np.bytes_) else str(v)


def _read_table(g: h5py.Group, name: str, fields: tuple[str, str], where: str) -> tuple[list[str], np.ndarray]:
    if name not in g:
        log.warning("%s: no '%s' table", where, name)
        return [], np.zeros((0, 3 if fields[1] == "position" else 2))
    t = g[name][()]
    if t.dtype.names is None or any(f not in t.dtype.names for f in fields):
        raise H5parmError(f"{where}/{name}: expected a table with fields {', '.join(fields)}")
    return list(_strings(t[fields[0]])), np.asarray(t[fields[1]], dtype=np.float64)


def _read_soltab(t: h5py.Group, where: str) -> Soltab:
    soltype = _attr_str(t, "TITLE")
    if not soltype:
        raise H5parmError(f"{where}: soltab has no TITLE attribute (the solution type)")
    for dname in ("val", "weight"):
        if dname not in t:
            raise H5parmError(f"{where}: soltab has no '{dname}' dataset")
    axes_attr = _attr_str(t["val"], "AXES")
    if not axes_attr:
        raise H5parmError(f"{where}/val: no AXES attribute naming its axes")
    axes = tuple(a.strip() for a in axes_attr.split(","))
    val = t["val"][()]
    if len(axes) != val.ndim:
        raise H5parmError(f"{where}/val: AXES '{axes_attr}' names {len(axes)} axes, val has {val.ndim}")
    coords = {}
    for i, a in enumerate(axes):
        if a not in t:
            raise H5parmError(f"{where}: axis '{a}' named in AXES '{axes_attr}' has no dataset")
        c = t[a][()]
        c = _strings(c) if c.dtype.kind in "SUO" else np.asarray(c, dtype=np.float64).ravel()
        if c.size != val.shape[i]:
            raise H5parmError(f"{where}: axis '{a}' has {c.size} values, val has {val.shape[i]} along it")
        coords[a] = c
    weight = t["weight"][()]
    if weight.shape != val.shape:
        w_axes = _attr_str(t["weight"], "AXES")
        raise H5parmError(f"{where}/weight: shape {weight.shape} (AXES {w_axes}) != val shape {val.shape}")
    attrs = {k: v for k, v in t.attrs.items() if k not in ("TITLE", "h5parm_version", "CLASS", "VERSION")}
    return Soltab(soltype=soltype, axes=axes, coords=coords, val=val, weight=weight, attrs=attrs)


def read_h5parm(path: str | os.PathLike, solset: str | None = None) -> Solset:
    """Read one solset of an h5parm file (every soltab in it).

    Parameters
    ----------
    path : the h5parm file
    solset : name of the solset; None: ``sol000`` if present, else the first in name order

    Raises
    ------
    H5parmError
        Missing or unreadable file, no solset, a soltab without TITLE / val / weight / AXES,
        or an axis named in AXES without its dataset; one line naming file and soltab.
    """
    path = Path(path)
    if not path.is_file():
        raise H5parmError(f"{path}: no such h5parm file")
    if not h5py.is_hdf5(path):
        raise H5parmError(f"{path}: not an HDF5 (h5parm) file")
    try:
        with h5py.File(path, "r") as f:
            names = sorted(k for k in f if isinstance(f[k], h5py.Group))
            if not names:
                raise H5parmError(f"{path}: no solset in the file (expected a group such as sol000)")
            name = solset or ("sol000" if "sol000" in names else names[0])
            if name not in names:
                raise H5parmError(f"{path}: no solset '{name}' (has {', '.join(names)})")
            g = f[name]
            where = f"{path}:{name}"
            ant_names, ant_pos = _read_table(g, "antenna", ("name", "position"), where)
            src_names, src_dirs = _read_table(g, "source", ("name", "dir"), where)
            soltabs = {k: _read_soltab(g[k], f"{where}/{k}") for k in sorted(g) if isinstance(g[k], h5py.Group)}
            attrs = {k: v for k, v in g.attrs.items() if k != "h5parm_version"}
    except H5parmError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise H5parmError(f"{path}: unreadable h5parm ({str(e).splitlines()[0]})") from None
    if not soltabs:
        raise H5parmError(f"{path}:{name}: solset has no soltabs")
    return Solset(antenna_names=ant_names, antenna_positions=ant_pos, source_names=src_names, source_dirs=src_dirs,
                  soltabs=soltabs, name=name, attrs=attrs)
