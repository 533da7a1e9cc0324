"""arl_mpi: distributed radio-interferometric imaging and calibration (MPI + Dask + ducc0)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.split("#")[0].strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="arl_mpi",
    version="0.1.0",
    description="Distributed radio-interferometric imaging and calibration on MPI + Dask with ducc0",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["arl_mpi", "arl_mpi.*"]),
    package_data={"arl_mpi.simulation": ["data/*.txt"]},
    install_requires=requirements,
    extras_require={
        # MeasurementSet ingest
        "ms": ["python-casacore>=3.5"],
        # PyPI's MPICH (what `make install` chooses); leave it out to use the site's MPI with an
        # mpi4py built against it (README: "The site's MPI")
        "mpich": ["mpich>=4.2"],
        "test": ["pytest>=7.4", "ruff>=0.5", "psutil>=5.9"],
        # partitions opened as labelled datasets: xarray.open_dataset(partition, engine="h5netcdf")
        "xarray": ["xarray>=2023.1", "h5netcdf>=1.1"],
        # Radler (WSClean's deconvolution library, LGPL-3): --deconvolver radler; binary wheels only
        "radler": ["radler>=1.2"],
        # MSv4 processing sets (ingest, export, and xradio's own MS -> MSv4 converter for the tests)
        "msv4": ["xradio[casacore]>=1.3"],
        # DP3 (its PyPI wheel: x86_64 Linux), for the test that applies our h5parm with DP3's ApplyCal
        "dp3": ['dp3>=6.6; platform_machine == "x86_64" and sys_platform == "linux"'],
        # EveryBeam (GPL-3): --apply-primary-beam for LOFAR, OSKAR/SKA-LOW, SKA-MID, MWA (reads the MS: with [ms])
        "beam": ["everybeam>=0.9.1", "python-casacore>=3.5"],
    },
    entry_points={
        "console_scripts": [
            "arl-pipeline=arl_mpi.pipeline.__main__:entry",
            "arl-simulate=arl_mpi.simulate:entry",
            "arl-ingest=arl_mpi.ingest:entry",
        ]
    },
    license="Apache-2.0",
)
