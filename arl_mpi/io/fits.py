"""FITS images (RA---SIN / DEC--SIN / FREQ / STOKES) and PNG previews, written atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from arl_mpi import __version__
from arl_mpi.errors import InputError
from arl_mpi.io.atomic import atomic_path
from arl_mpi.models import Image

log = logging.getLogger(__name__)


def image_to_hdu(img: Image) -> fits.PrimaryHDU:
    """Build a primary HDU with the image's WCS, BUNIT and (if set) restoring beam."""
    hdr = img.wcs.to_header()
    hdr["BUNIT"] = img.bunit
    hdr["BTYPE"] = "Intensity"
    hdr["TELESCOP"] = img.wcs.wcs.name or hdr.get("TELESCOP", "")
    hdr["ORIGIN"] = f"arl_mpi {__version__}"
    if img.beam is not None:
        hdr["BMAJ"] = (float(img.beam[0]), "beam major axis FWHM (deg)")
        hdr["BMIN"] = (float(img.beam[1]), "beam minor axis FWHM (deg)")
        hdr["BPA"] = (float(img.beam[2]), "beam position angle (deg, N through E)")
    for line in img.history:
        hdr.add_history(line)
    # FITS axis order is (x, y, freq, stokes); numpy order is the reverse.
    data = np.ascontiguousarray(np.transpose(img.data, (1, 0, 2, 3)), dtype=np.float32)
    return fits.PrimaryHDU(data=data, header=hdr)


def write_fits(path: str | os.PathLike, img: Image) -> Path:
    """Write ``img`` to ``path`` atomically (temporary name, then rename)."""
    hdu = image_to_hdu(img)
    with atomic_path(path) as tmp:
        hdu.writeto(tmp, output_verify="exception")
    log.debug("wrote %s", path)
    return Path(path)


def read_fits(path: str | os.PathLike) -> Image:
    """Read an image written by :func:`write_fits` (or any 4-axis RA/DEC/FREQ/STOKES image).

    Raises
    ------
    InputError naming the file when it is missing or not such an image.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such FITS image")
    try:
        with fits.open(p, mode="readonly", memmap=False) as hdul:
            hdr = hdul[0].header
            data = np.asarray(hdul[0].data, dtype=np.float64)
    except OSError as e:
        raise InputError(f"{p}: not a readable FITS file ({e})") from None
    if data.ndim != 4:
        raise InputError(f"{p}: expected a 4-axis image, got {data.ndim} axes")
    wcs = WCS(hdr)
    beam = None
    if "BMAJ" in hdr:
        beam = (float(hdr["BMAJ"]), float(hdr["BMIN"]), float(hdr.get("BPA", 0.0)))
    return Image(data=np.transpose(data, (1, 0, 2, 3)), wcs=wcs, bunit=str(hdr.get("BUNIT", "")), beam=beam)


def preview_stretch(plane: np.ndarray) -> tuple[float, float, float]:
    """``(vmin, vmax, linear_width)`` of the asinh stretch of a preview.

    The scale runs from the 0.5th percentile (clipping the deepest negative sidelobes) to the
    peak; the asinh is linear within a few noise sigmas (MAD) of zero and logarithmic above
    (as DS9's and CARTA's asinh scales), so the noise and faint sources stay visible next to
    a source thousands of times brighter, which a linear scale renders black.
    """
    finite = plane[np.isfinite(plane)]
    if finite.size == 0:
        return 0.0, 1.0, 1.0
    vmin, vmax = float(np.percentile(finite, 0.5)), float(finite.max())
    sigma = 1.4826 * float(np.median(np.abs(finite - np.median(finite))))
    if vmax <= vmin:
        vmax = vmin + 1.0
    width = max(3.0 * sigma, 1e-3 * (vmax - vmin))
    return vmin, vmax, width


def write_png(path: str | os.PathLike, img: Image, title: str = "", chan: int = 0, pol: int = 0) -> Path:
    """Write a PNG preview of one plane (RA increasing leftwards, as on the sky).

    Colours follow :func:`preview_stretch`: percentile clip with an asinh stretch.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import AsinhNorm

    plane = img.data[chan, pol]
    vmin, vmax, width = preview_stretch(plane)
    celestial = img.wcs.celestial
    fig = plt.figure(figsize=(6.4, 5.6), dpi=100)
    ax = fig.add_subplot(projection=celestial)
    im = ax.imshow(plane, origin="lower", cmap="inferno",
                   norm=AsinhNorm(linear_width=width, vmin=vmin, vmax=vmax))
    ax.set_xlabel("RA")
    ax.set_ylabel("Dec")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=img.bunit)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)
