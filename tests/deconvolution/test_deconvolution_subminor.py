"""Hogbom with sub-minor loops (the default engine) and the Radler engine against a plain
reference Hogbom written here, on point sources + noise."""

import numpy as np
import pytest

from arl_mpi.deconvolution import CleanParams, CleanSettings, hogbom, minor_cycle_step
from arl_mpi.deconvolution import subminor as sm
from arl_mpi.deconvolution.common import convolve_same
from arl_mpi.deconvolution.hogbom import hogbom_exact
from arl_mpi.deconvolution.radler_engine import radler_available, resolve_deconvolver
from arl_mpi.errors import ConfigError

N = 128
SOURCES = {(20, 30): 1.0, (64, 70): 0.6, (70, 75): 0.25, (100, 20): 0.4, (40, 110): -0.3}
NOISE = 2e-3


def psf_img(n, width=2.0, ring=7.0):
    """A PSF with a main lobe and 15% ring sidelobes that decay over ~20 pixels."""
    y, x = np.mgrid[0:n, 0:n] - n // 2
    r = np.hypot(x, y * 1.3)
    p = np.exp(-(r**2) / (2 * width**2)) + 0.15 * np.cos(r / ring * np.pi) * np.exp(-r / 20)
    return p / p[n // 2, n // 2]


def scene(seed=0):
    sky = np.zeros((N, N))
    for p, f in SOURCES.items():
        sky[p] = f
    rng = np.random.default_rng(seed)
    return convolve_same(sky, psf_img(2 * N)) + NOISE * rng.normal(size=(N, N))


def plain_hogbom(dirty, psf, gain, threshold, niter=100_000):
    """Textbook Hogbom: global |peak| each iteration, shifted PSF subtracted where it overlaps."""
    r = dirty.copy()
    m = np.zeros_like(r)
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    ny, nx = r.shape
    for _ in range(niter):
        y, x = np.unravel_index(np.argmax(np.abs(r)), r.shape)
        if abs(r[y, x]) <= threshold:
            break
        a = gain * r[y, x]
        m[y, x] += a
        y0, x0 = y - cy, x - cx
        ys, ye, xs, xe = max(0, y0), min(ny, y0 + psf.shape[0]), max(0, x0), min(nx, x0 + psf.shape[1])
        r[ys:ye, xs:xe] -= a * psf[ys - y0 : ye - y0, xs - x0 : xe - x0]
    return m, r


def fluxes(model):
    """CLEAN flux within 2 pixels of each source."""
    return np.array([model[y - 2 : y + 3, x - 2 : x + 3].sum() for y, x in SOURCES])


THR = 5 * NOISE


@pytest.fixture(scope="module")
def reference():
    dirty = scene()
    return dirty, plain_hogbom(dirty, psf_img(2 * N), 0.1, THR)


def check_against_reference(model, resid, ref_model, rtol=0.01):
    np.testing.assert_allclose(fluxes(model), fluxes(ref_model), rtol=rtol)
    # same component positions: the pixels that carry the flux (|component| > 1% of the peak)
    strong = np.abs(ref_model) > 0.01
    assert np.array_equal(np.abs(model) > 0.01, strong)


@pytest.mark.parametrize("double", [False, True])
def test_subminor_matches_plain_reference(reference, double):
    dirty, (ref_m, ref_r) = reference
    model, resid, info = hogbom(dirty, psf_img(2 * N), CleanParams(niter=100_000, threshold=THR, double=double))
    assert info["engine"] == "subminor" and info["stop_reason"] == "threshold"
    assert info["loops"] >= 2  # it did iterate on lists, more than one
    check_against_reference(model, resid, ref_m)
    assert np.abs(resid).max() <= THR and info["peak"] <= THR
    # and the sources' fluxes themselves are recovered (noise-limited)
    np.testing.assert_allclose(fluxes(model), list(SOURCES.values()), atol=0.02)


@pytest.mark.parametrize("max_list", [16, 200])
def test_short_lists_match_plain_reference(reference, max_list):
    """Lists of a few pixels: many sub-minor loops, each a few components; same result."""
    dirty, (ref_m, ref_r) = reference
    resid = dirty.copy()
    model, info = sm.subminor_clean(
        resid, psf_img(2 * N), gain=0.1, niter=100_000, level_stop=THR, mask=None, keep=None, max_list=max_list
    )
    assert info["loops"] >= (15 if max_list == 16 else 3) and info["stopped"] == "level"
    check_against_reference(model, resid, ref_m)
    assert np.abs(resid).max() <= THR


def test_fft_update_equals_direct_update(reference, monkeypatch):
    """The full-image update by FFT (forced here) equals the shifted-PSF subtraction."""
    dirty, (ref_m, _) = reference
    params = CleanParams(niter=100_000, threshold=THR, double=True)
    m_direct, r_direct, i_direct = hogbom(dirty, psf_img(2 * N), params)
    monkeypatch.setattr(sm, "FFT_COST_FACTOR", 0.0)
    m_fft, r_fft, i_fft = hogbom(dirty, psf_img(2 * N), params)
    assert i_fft["ffts"] == i_fft["loops"] and i_direct["ffts"] == 0
    np.testing.assert_allclose(r_fft, r_direct, atol=1e-10)
    np.testing.assert_allclose(m_fft, m_direct, atol=1e-10)


@pytest.mark.parametrize("psf_n", [N, 2 * N, 41, 2 * N + 3])
def test_psf_convolver_is_linear_convolution(psf_n):
    rng = np.random.default_rng(1)
    img = np.zeros((N, N + 6))
    img[rng.integers(0, N, 30), rng.integers(0, N + 6, 30)] = rng.normal(size=30)
    img[0, 0], img[-1, -1] = 1.0, -2.0  # corners: any wrap-around would show
    psf = psf_img(psf_n)
    conv = sm.PsfConvolver(psf, img.shape, np.float64)
    np.testing.assert_allclose(conv.convolve(img), convolve_same(img, psf), atol=1e-12)


def test_clark_window_converges_to_the_same_fluxes(reference):
    """A Clark-style PSF window in the sub-minor loop (inexact in-loop updates) still reaches the
    same fluxes, because every loop ends with an exact full-image update."""
    dirty, (ref_m, _) = reference
    resid = dirty.astype(np.float32)
    model, info = sm.subminor_clean(
        resid, psf_img(2 * N), gain=0.1, niter=100_000, level_stop=THR, mask=None, keep=None, window=8
    )
    assert info["window"] == 8 and info["stopped"] == "level"
    np.testing.assert_allclose(fluxes(model), fluxes(ref_m), rtol=0.02)
    assert np.abs(resid).max() <= THR


def test_mask_and_keep_honoured(reference):
    dirty = reference[0]
    mask = np.zeros((N, N), dtype=bool)
    mask[55:80, 60:85] = True  # the 0.6 and 0.25 Jy sources
    model, resid, info = hogbom(dirty, psf_img(2 * N), CleanParams(niter=5000, threshold=THR, mask=mask))
    assert np.all(model[~mask] == 0) and info["peak"] <= THR
    assert np.abs(resid[mask]).max() <= THR and np.abs(resid).max() > 0.5  # 1 Jy source left
    ref_m, _ = hogbom_exact(dirty, psf_img(2 * N), CleanParams(niter=5000, threshold=THR, mask=mask))[:2]
    np.testing.assert_allclose(fluxes(model)[1:3], fluxes(ref_m)[1:3], rtol=0.01)
    keep = np.ones((N, N), dtype=bool)
    keep[:, :50] = False
    mk, rk, ik = hogbom(dirty, psf_img(2 * N), CleanParams(niter=100_000, threshold=THR), keep=keep)
    assert np.all(mk[~keep] == 0) and 0 < ik["kept"] < ik["niter"]
    assert np.abs(rk).max() <= THR  # components outside `keep` were still subtracted


def test_psf_sidelobe():
    p = psf_img(2 * N)
    s = sm.psf_sidelobe(p)
    # the first negative ring of 0.15 cos(r pi / 7) exp(-r / 20): near r = 7
    assert 0.05 < s < 0.15
    y, x = np.mgrid[-20:21, -20:21]
    assert sm.psf_sidelobe(np.exp(-(x**2 + y**2) / 8.0)) == 0.0


def test_engine_choice():
    assert resolve_deconvolver("auto") == "arl" and resolve_deconvolver("arl") == "arl"
    with pytest.raises(ConfigError, match="deconvolver"):
        resolve_deconvolver("wsclean")
    if not radler_available():
        with pytest.raises(ConfigError, match=r"arl_mpi\[radler\]"):
            resolve_deconvolver("radler")
        return
    assert resolve_deconvolver("radler") == "radler"
    # Radler lacks the sub-image margin and MS-MFS Taylor terms: ours runs those
    assert resolve_deconvolver("radler", keep=True) == "arl"
    assert resolve_deconvolver("radler", nchan=3) == "arl"
    assert resolve_deconvolver("radler", algorithm="multiscale") == "arl"


def test_radler_engine_same_fluxes(reference):
    if not radler_available():
        pytest.skip("radler not installed: pip install 'arl_mpi[radler]'")
    dirty = reference[0]
    thr = 2 * NOISE  # Radler stops on its own running peak: clean deeper so both reach the sources' fluxes
    ours, _, _ = hogbom(dirty, psf_img(2 * N), CleanParams(niter=100_000, threshold=thr))
    settings = CleanSettings(niter=100_000, threshold=thr, mgain=None, deconvolver="radler")
    model, info = minor_cycle_step(dirty, psf_img(2 * N), None, settings)
    assert info["engine"] == "radler" and info["stop_reason"] == "threshold"
    np.testing.assert_allclose(fluxes(model), fluxes(ours), rtol=0.01)


def test_list_of_tied_values_makes_progress_and_nan_is_one_line():
    """More pixels than the list holds, all at one value (ties at the cut): the list is never
    empty and every loop makes progress; a NaN residual is a one-line InputError, not a crash."""
    from arl_mpi.deconvolution.subminor import subminor_clean
    from arl_mpi.errors import InputError

    n = 64
    psf = np.zeros((2 * n, 2 * n))
    psf[n, n] = 1.0  # a delta PSF: components never touch other pixels
    res = np.zeros((n, n))
    res[:40, :40] = 1.0  # 1600 tied pixels
    work = res.copy()
    model, info = subminor_clean(work, psf, gain=1.0, niter=1600, level_stop=0.5, mask=None, keep=None,
                                 max_list=100)
    model = model.reshape(n, n)
    assert np.isclose(model.sum(), 1600.0) and np.all(model[:40, :40] == 1.0)
    assert np.abs(work).max() < 1e-12  # the FFT update leaves round-off only
    bad = res.copy()
    bad[50, 50] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        subminor_clean(bad, psf, gain=0.1, niter=10, level_stop=0.0, mask=None, keep=None)
