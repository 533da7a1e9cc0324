"""Test-data helpers shared by the tests, benchmarks and examples (not used by the pipelines).

* :mod:`arl_mpi.testing.synthetic_calibration` -- toy observations with a point-source model
  for calibration tests and benchmarks;
* :mod:`arl_mpi.testing.realdata` -- public real observations fetched from a registry package
  at test time (never committed).
"""
