# Two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat setup.py | md5sum | cut -c1-12)
DEMO_FASTA ?= /usr/share/doc/mmseqs2/example-data/DB.fasta.gz
PYTEST_ARGS ?=

.PHONY: install test test-fast demo demo-data clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: 2.13.0 is the CPU build on local disk (a bare `torch` pulls CUDA).
	$(PIP) install -q "torch==2.13.0"
	# tpu: libtpu (~140 MB), for the tests that compile for TPU slices (tests/aot).
	$(PIP) install -q -e ".[hf,dev,tpu]"
	touch $(STAMP)

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
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PY) -m pytest -q $(PYTEST_ARGS) tests

test-fast: install
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) build *.egg-info runs
