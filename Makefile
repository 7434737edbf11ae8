# Two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat setup.py | md5sum | cut -c1-12)
DEMO_FASTA ?= /usr/share/doc/mmseqs2/example-data/DB.fasta.gz
PYTEST_ARGS ?=
# Two pytest workers (pytest-xdist), one test file per worker at a time (module fixtures such as a
# trained run stay in one process): the 2-core CI machine is otherwise idle while a test waits on a
# subprocess or compiles single-threaded. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

.PHONY: install test test-fast demo demo-data clean

# pip's own output (index warnings of the machine's pip configuration, setuptools notes) goes to
# $(VENV)/install.log; it is shown only when an install step fails.
INSTALL_LOG := $(VENV)/install.log
RUN_PIP = $(PIP) install --disable-pip-version-check

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing protlm and its dependencies into $(VENV) (log: $(INSTALL_LOG))"
	@: > $(INSTALL_LOG)
	@$(RUN_PIP) --upgrade pip >> $(INSTALL_LOG) 2>&1 || { tail -40 $(INSTALL_LOG); exit 1; }
	@# torch first, pinned: 2.13.0 is the CPU build on local disk (a bare `torch` pulls CUDA).
	@$(RUN_PIP) "torch==2.13.0" >> $(INSTALL_LOG) 2>&1 || { tail -40 $(INSTALL_LOG); exit 1; }
	@# tpu: libtpu (~140 MB), for the tests that compile for TPU slices (tests/aot).
	@$(RUN_PIP) -e ".[hf,dev,tpu]" >> $(INSTALL_LOG) 2>&1 || { tail -40 $(INSTALL_LOG); exit 1; }
	@# cuda_aot: jax's CUDA compiler plugin (~480 MB, no CUDA libraries) for the tests that compile
	@# for GPUs without one (tests/aot/test_gpu_compile.py). Kept off the default path: without a
	@# GPU the plugin logs a driver probe whenever jax starts.
	@rm -rf $(VENV)/cuda_aot && V=$$($(PY) -c "import importlib.metadata as m; print(m.version('jaxlib'))") && \
	  $(RUN_PIP) --no-deps --target $(VENV)/cuda_aot "jax-cuda12-plugin==$$V" "jax-cuda12-pjrt==$$V" \
	  >> $(INSTALL_LOG) 2>&1 || { tail -40 $(INSTALL_LOG); exit 1; }
	@touch $(STAMP)
	@echo "installed (log: $(INSTALL_LOG))"

install: $(STAMP)

# The embedded default corpus: 20,000 UniProt sequences from Debian's mmseqs2-examples.
demo-data:
	@if [ ! -f "$(DEMO_FASTA)" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq mmseqs2-examples) >/dev/null; \
	  else \
	    echo "Install Debian's mmseqs2-examples or run: make demo DEMO_FASTA=/path/to/any.fasta[.gz]"; exit 1; \
	  fi; \
	fi

demo: install demo-data
	$(PY) -m protlm.demo --fasta "$(DEMO_FASTA)" --model_dir runs/quickstart

test: install
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS) tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(XDIST) $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) build *.egg-info runs
