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
        "test": ["pytest>=7.4", "ruff>=0.5", "psutil>=5.9"],
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
