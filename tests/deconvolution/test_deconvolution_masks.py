"""Masks: WSClean's auto-mask, local-RMS thresholds and --fits-mask (shape checked)."""

import numpy as np
import pytest
from astropy.io import fits

from arl_mpi.deconvolution import CleanParams, CleanSettings, hogbom
from arl_mpi.deconvolution.common import convolve_same
from arl_mpi.deconvolution.masks import local_rms_map, main_lobe_width
from arl_mpi.deconvolution.serial_loop import clean_image_domain
from arl_mpi.errors import InputError

N = 128
SIGMA = 1e-3


def psf_img(n, width=2.0, ring=5.0, amp=0.3):
    """Main lobe plus strong (30%) ring sidelobes: a bright source confuses its neighbours."""
    y, x = np.mgrid[0:n, 0:n] - n // 2
    r = np.hypot(x, y * 1.3)
    p = np.exp(-(r**2) / (2 * width**2)) + amp * np.cos(r / ring * np.pi) * np.exp(-r / 30)
    return p / p[n // 2, n // 2]


def box(m, y, x):
    return m[y - 2 : y + 3, x - 2 : x + 3].sum()


@pytest.fixture(scope="module")
def confused():
    """10 Jy next to 0.2 Jy on its first sidelobe ring (0.55 Jy of sidelobe there), PSF-shaped
    noise of 1 mJy."""
    psf = psf_img(2 * N)
    sky = np.zeros((N, N))
    sky[64, 64], sky[64, 72] = 10.0, 0.2
    rng = np.random.default_rng(0)
    noise = convolve_same(rng.normal(size=(N, N)), psf)
    noise *= SIGMA / noise.std()
    return convolve_same(sky, psf) + noise, psf


def outside_sources(m):
    out = m.copy()
    out[62:67, 62:67] = 0
    out[62:67, 70:75] = 0
    return out


def test_auto_mask_recovers_faint_source_without_divergence(confused):
    dirty, psf = confused
    cs = CleanSettings(niter=50_000, gain=0.1, mgain=0.8, auto_threshold=1.0, auto_mask=5.0, nmiter=30)
    r = clean_image_domain(dirty[None], psf[None], cs)
    m = r["model"][0]
    assert box(m, 64, 72) == pytest.approx(0.2, rel=0.02)
    assert box(m, 64, 64) == pytest.approx(10.0, rel=0.002)
    phases = [c.get("auto_mask_phase") for c in r["cycles"]]
    assert phases[0] == "auto_mask" and phases[-1] == "masked"
    assert sum(bool(c.get("auto_mask_made")) for c in r["cycles"]) == 1
    # after the mask: components only where components were before, none in the noise
    assert np.all(outside_sources(m) == 0)
    assert cs.automask.active and np.all(m[~cs.automask.mask] == 0)
    # no divergence: the residual is the noise, the peaks fell every cycle
    assert np.std(r["residual"][0]) == pytest.approx(SIGMA, rel=0.1)
    assert r["stop_reason"] in ("auto_threshold", "no_progress") and len(r["cycles"]) < 15


def test_cleaning_to_one_sigma_without_a_mask_diverges(confused):
    """The reason for auto-masking: the same depth everywhere cleans the noise."""
    dirty, psf = confused
    cs = CleanSettings(niter=20_000, gain=0.1, mgain=0.8, auto_threshold=1.0, nmiter=6)
    r = clean_image_domain(dirty[None], psf[None], cs)
    assert np.abs(outside_sources(r["model"][0])).sum() > 10 * 0.2


def test_local_rms_thresholds():
    """Noise 1 mJy on the left, 10 mJy on the right: with a local RMS, 5 sigma holds everywhere."""
    psf = psf_img(2 * N, amp=0.05)
    rng = np.random.default_rng(2)
    ramp = np.clip((np.arange(N) - 40) / 48, 0, 1)  # 1 mJy left of x = 40, 10 mJy right of 88
    noise = rng.normal(size=(N, N)) * (1e-3 * 10**ramp)[None, :]
    sky = np.zeros((N, N))
    sky[40, 30] = 0.03  # 30 sigma on the quiet side
    dirty = convolve_same(sky, psf) + noise
    rms = local_rms_map(dirty, 5 * main_lobe_width(psf))  # a 17-pixel window
    assert rms[64, 10] == pytest.approx(1e-3, rel=0.3) and rms[64, 118] == pytest.approx(1e-2, rel=0.3)
    p = CleanParams(niter=5000, auto_threshold=5.0)
    glob, _, gi = hogbom(dirty, psf, p)
    weight = rms.min() / rms
    loc, _, li = hogbom(dirty, psf, p.replace(search_weight=weight, noise_sigma=float(rms.min())))
    right = np.s_[:, 96:]
    # one global sigma (the MAD of both halves) cleans noise peaks on the noisy side ...
    assert np.count_nonzero(glob[right]) > 20
    # ... the local RMS does not (5 sigma of 10 mJy), and still cleans the quiet side's source
    assert np.count_nonzero(loc[right]) <= 2
    # (to 5 local sigma: within 6 mJy, deeper than the global sigma, which is the two halves' MAD)
    assert box(loc, 40, 30) == pytest.approx(0.03, abs=6e-3) and box(loc, 40, 30) > box(glob, 40, 30) + 3e-3
    assert li["stop_reason"] == "auto_threshold"
    # the local-RMS run through the settings (as the pipeline's --local-rms)
    cs = CleanSettings(niter=5000, auto_threshold=5.0, mgain=None, local_rms_window=5.0, nmiter=1)
    r = clean_image_domain(dirty[None], psf[None], cs)
    assert np.count_nonzero(r["model"][0][right]) <= 2


def write_mask(path, plane):
    fits.PrimaryHDU(data=plane[None, None].astype(np.float32)).writeto(path)


def test_fits_mask_loaded_and_shape_checked(tmp_path):
    from arl_mpi.pipeline.minor import clean_settings, load_fits_mask
    from arl_mpi.pipeline.settings import settings_from_args

    plane = np.zeros((48, 64))
    plane[10:20, 30:40] = 1
    good = tmp_path / "good.fits"
    write_mask(good, plane)
    s = settings_from_args(["--size", "64", "48", "--fits-mask", str(good), "--niter", "10"])
    cs = clean_settings(s)
    assert cs.mask.shape == (48, 64) and cs.mask.sum() == 100 and cs.mask[15, 35]
    bad = tmp_path / "bad.fits"
    write_mask(bad, np.ones((64, 64)))
    with pytest.raises(InputError) as e:
        load_fits_mask(str(bad), (64, 48))
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and "64 x 64" in msg and "64 x 48" in msg
    with pytest.raises(InputError, match="no such FITS mask"):
        load_fits_mask(str(tmp_path / "missing.fits"), (64, 48))


def test_wrong_mask_shape_exits_2_before_any_output(tmp_path, capsys):
    from arl_mpi.cli import run_cli
    from arl_mpi.pipeline.__main__ import main

    bad = tmp_path / "bad.fits"
    write_mask(bad, np.ones((32, 32)))
    out = tmp_path / "out"
    argv = ["--name", str(out / "run"), "--size", "64", "64", "--niter", "10", "--fits-mask", str(bad)]
    assert run_cli(main, argv, prog="arl_mpi.pipeline") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "32 x 32" in err and "64 x 64" in err
    assert not out.exists() or not any(out.iterdir())


def test_stopping_peak_is_the_masked_peak():
    """With a --fits-mask the major cycle's stopping peak is the one inside the mask (a bright
    source outside it would otherwise keep the loop going until no_progress); sigma is global."""
    from arl_mpi.deconvolution.minor_cycle import residual_stats

    rng = np.random.default_rng(3)
    img = rng.normal(0, 0.01, (1, 64, 64))
    img[0, 10, 10] = 5.0  # outside the mask
    img[0, 40, 40] = 0.5  # inside
    mask = np.zeros((64, 64), bool)
    mask[30:50, 30:50] = True
    peak, sigma = residual_stats(img, np.ones(1), mask)
    assert peak == 0.5
    peak_all, sigma_all = residual_stats(img, np.ones(1))
    assert peak_all == 5.0 and sigma == sigma_all
    assert abs(sigma - 0.01) < 0.002
