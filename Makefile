# arl_mpi: `make run` and `make test` each set everything up from a clean clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
NP     ?= 4
OUTPUT ?= output
PYTEST_ARGS ?=
# MPI=mpich (default): PyPI's `mpich` wheel in the venv. MPI=site: no wheel; mpi4py built against
# the MPI whose compiler wrapper is $(MPICC) (unless the venv has one already), launched with that
# MPI's own mpiexec/mpirun/srun (README: "The site's MPI").
MPI    ?= mpich
MPICC  ?= mpicc
comma  := ,
MPIEXTRA := $(if $(filter site,$(MPI)),,$(comma)mpich)
MPIEXEC ?= $(if $(filter site,$(MPI)),mpiexec,$(VENV)/bin/mpiexec)

.PHONY: install run test lint clean

$(VENV)/.installed: setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(filter site,$(MPI)),MPICC=$(MPICC) $(PY) -m pip install --quiet --no-cache-dir --no-binary=mpi4py 'mpi4py>=4.0')
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e '.[ms,test,xarray,dp3,msv4,radler,beam$(MPIEXTRA)]'
	touch $@

install: $(VENV)/.installed

# The main job: the continuum pipeline under MPI (rank 0 scheduler, rank 1 driver,
# ranks 2+ workers) on the built-in simulated LOW-core observation; images land in output/.
run: install
	mkdir -p $(OUTPUT)
	$(MPIEXEC) -n $(NP) $(PY) -m arl_mpi.pipeline --name $(OUTPUT)/arl \
		--size 512 512 --scale 40asec --niter 5000 --mgain 0.8 --auto-threshold 3 --weight briggs 0 --channels-out 4
	@echo "Images in $(OUTPUT)/: $$(ls $(OUTPUT) | grep -E 'fits|png' | tr '\n' ' ')"

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check arl_mpi tests benchmarks examples

clean:
	rm -rf $(OUTPUT) .pytest_cache
