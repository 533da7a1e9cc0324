"""WSClean component lists (``--save-source-list``): written from a model, read back, read by WSClean."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

from arl_mpi.errors import InputError
from arl_mpi.io.fits import write_fits
from arl_mpi.io.sourcelist import (
    components_from_model,
    format_dec,
    format_ra,
    parse_dec,
    parse_ra,
    read_source_list,
    save_source_list,
    write_source_list,
)
from arl_mpi.models import Image, image_wcs

CENTRE = SkyCoord(ra=50.67 * u.deg, dec=-37.2 * u.deg)
N, CELL = 64, np.deg2rad(60 / 3600)
PIXELS = [(32, 32), (10, 50), (45, 7)]  # (y, x)


def _model(freqs, spectra) -> Image:
    data = np.zeros((len(freqs), 1, N, N))
    for (y, x), s in zip(PIXELS, spectra, strict=True):
        data[:, 0, y, x] = s
    cw = float(freqs[1] - freqs[0]) if len(freqs) > 1 else 1e6
    return Image(data=data, wcs=image_wcs(CENTRE, N, N, CELL, freqs[0], cw, ["I"]), bunit="JY/PIXEL")


def test_sexagesimal_round_trip():
    for ra in (0.0, 50.67, 123.456789, 359.99999999999):
        assert parse_ra(format_ra(ra)) == pytest.approx(ra % 360 if ra < 359.9999 else 0.0, abs=1e-9)
    for dec in (-89.999, -37.2, -0.5, 0.0, 12.3456789):
        assert parse_dec(format_dec(dec)) == pytest.approx(dec, abs=2e-9)
    assert format_dec(-0.5) == "-00.30.00.00000" and format_ra(15.0) == "01:00:00.000000"
    assert parse_ra("-08:28:05.152") == pytest.approx(360 - 15 * (8 + 28 / 60 + 5.152 / 3600))  # WSClean's docs


def test_components_with_spectral_terms_read_back(tmp_path):
    freqs = np.array([100e6, 110e6, 120e6, 130e6])
    ref = freqs.mean()
    x = freqs / ref - 1
    truth = [(2.0, -1.5), (0.5, 0.3), (-0.2, 0.0)]  # (I at ref, linear term): S = I + c0 x
    img = _model(freqs, [a + b * x for a, b in truth])
    comps, f0 = components_from_model(img, nterms=2)
    assert f0 == pytest.approx(ref)
    path = write_source_list(tmp_path / "m-sources.txt", comps, f0)
    lines = path.read_text().splitlines()
    assert lines[0] == ("Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
                        f"ReferenceFrequency='{float(ref)!r}', MajorAxis, MinorAxis, Orientation")
    assert len(lines) == 4 and all(line.startswith(f"s0c{i},POINT,") for i, line in enumerate(lines[1:]))
    back = read_source_list(path)
    assert len(back) == 3
    found = {}
    for c in back:
        px, py = img.wcs.celestial.world_to_pixel_values(c.ra_deg, c.dec_deg)
        found[(int(round(float(py))), int(round(float(px))))] = c
        assert abs(px - round(float(px))) < 1e-4 and abs(py - round(float(py))) < 1e-4  # 6 ms of RA precision
        assert c.ref_freq == pytest.approx(ref, rel=1e-15) and not c.log_si and len(c.terms) == 1
    for (y, x0), (a, b) in zip(PIXELS, truth, strict=True):
        c = found[(y, x0)]
        assert c.flux == pytest.approx(a, rel=1e-12, abs=1e-14)
        assert c.terms[0] == pytest.approx(b, rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(c.flux_at(freqs), img.data[:, 0, y, x0], rtol=1e-12, atol=1e-14)
    # one plane: the flux itself, no spectral terms
    comps1, f1 = components_from_model(_model(freqs[:1], [1.0, 2.0, 3.0]), nterms=2)
    assert f1 == freqs[0] and sorted(c.flux for c in comps1) == [1.0, 2.0, 3.0]
    assert all(c.terms == () for c in comps1)


def test_save_source_list_from_model_fits(tmp_path):
    img = _model(np.array([150e6]), [1.0, 0.25, -0.5])
    write_fits(tmp_path / "run-model.fits", img)
    path = save_source_list(str(tmp_path / "run"))
    assert path == tmp_path / "run-sources.txt"
    assert sorted(c.flux for c in read_source_list(path)) == [-0.5, 0.25, 1.0]


def test_bad_source_lists(tmp_path):
    with pytest.raises(InputError, match="no such source list"):
        read_source_list(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("Name,Type\ns0c0,POINT\n")
    with pytest.raises(InputError, match="not a source list"):
        read_source_list(bad)
    bad.write_text("Format = Name, Type, Ra, Dec, I, ReferenceFrequency='1e8'\ns0c0,POINT,01:00:00,xx,1\n")
    with pytest.raises(InputError, match="line 2"):
        read_source_list(bad)


@pytest.mark.skipif(shutil.which("wsclean") is None, reason="wsclean not installed (apt-get install wsclean)")
def test_wsclean_restores_our_source_list(tmp_path):
    """WSClean 3.1 reads our list (-restore-list): each component lands on its pixel with its flux."""
    freqs = np.array([150e6])
    img = _model(freqs, [1.0, 0.25, -0.5])
    comps, f0 = components_from_model(img)
    write_source_list(tmp_path / "sources.txt", comps, f0)
    residual = Image(data=np.zeros_like(img.data), wcs=img.wcs, bunit="JY/BEAM", beam=(0.05, 0.05, 0.0))
    write_fits(tmp_path / "residual.fits", residual)
    r = subprocess.run(["wsclean", "-restore-list", str(tmp_path / "residual.fits"), str(tmp_path / "sources.txt"),
                        str(tmp_path / "restored.fits"), "-beam-size", "180"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = fits.getdata(tmp_path / "restored.fits").squeeze().astype(float)
    for (y, x), flux in zip(PIXELS, [1.0, 0.25, -0.5], strict=True):
        # a 3' beam on 1' pixels: the Gaussian's peak (= the flux in Jy/beam) is at the component's pixel
        assert out[y, x] == pytest.approx(flux, rel=2e-3)
        win = out[y - 2:y + 3, x - 2:x + 3]
        assert np.unravel_index(np.argmax(np.abs(win)), win.shape) == (2, 2)
