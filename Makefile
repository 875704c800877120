# Two commands do all set-up on a fresh machine: `make demo` and `make test`; `make docs` builds the site.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# A CPU wheel of this version is served here; an unpinned torch pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
PIP_VERSION ?= 26.3
UV_VERSION ?= 0.13.9
# Exact versions of every other dependency and extra that CI passed with (`make lock` writes it).
LOCK := requirements/lock.txt
STAMP := $(VENV)/.tiltedsam-installed
DOCS_STAMP := $(VENV)/.tiltedsam-docs-installed

.PHONY: demo test docs lint format clean reproduce results lock test-latest test-lowest

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==$(PIP_VERSION)
	$(PIP) install -q -c $(LOCK) torch==$(TORCH_VERSION)
	$(PIP) install -q -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

# The docs extra (MkDocs, Material, mkdocstrings) on top of the test install (which brings the CPU torch).
$(DOCS_STAMP): $(STAMP) pyproject.toml $(LOCK)
	$(PIP) install -q -c $(LOCK) -e '.[docs]'
	touch $(DOCS_STAMP)

# Re-resolve the lock from pyproject.toml's ranges (newest allowed releases) with uv, for Linux
# x86_64 and Python 3.11 (the machines CI runs on).  torch is pinned above, and the packages only
# its CUDA build needs (nvidia-*, cuda-*, triton) are left out: the CPU wheel needs none of them.
# Run `make test-latest` first; commit the new lock with the test run that passed on it.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q uv==$(UV_VERSION)
	echo torch==$(TORCH_VERSION) > $(LOCK).torch
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -c $(LOCK).torch --no-emit-package torch \
	  --custom-compile-command "make lock" -o $(LOCK).tmp
	$(PY) scripts/drop_cuda_pins.py $(LOCK).tmp $(LOCK)
	rm -f $(LOCK).tmp $(LOCK).torch

# Drift detector (not in CI): a throwaway venv with the newest releases pyproject.toml allows,
# the whole suite, one line of verdict.  The step before `make lock`.
test-latest:
	scripts/test_against.sh latest $(TORCH_VERSION)

# The other end of the ranges: the lowest version of every direct dependency pyproject.toml
# allows (uv's lowest-direct resolution), the whole suite, one line of verdict.
test-lowest:
	scripts/test_against.sh lowest $(TORCH_VERSION)

demo: $(STAMP)
	$(PY) -m tiltedsam compare --seeds 0,1,2 --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q

# The site, with warnings as errors, into site/; then every formula through the bundled KaTeX (needs node).
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	@if command -v node > /dev/null; then node scripts/check_katex.js site; \
	else echo "node not found: formulas not checked (they render in the browser)"; fi

# Issue #11's tables: CIFAR-10 clean/noisy and GLUE (hours on 2 CPU cores; resumable), then the page.
reproduce: $(STAMP)
	scripts/reproduce-cifar10.sh
	scripts/reproduce-glue.sh
	$(PY) scripts/build_results.py

# docs/results.md and docs/results-evidence.md from their templates and the stored runs
# (nothing typed by hand).  Evidence studies: scripts/evidence.sh configs/evidence/*.toml.
results: $(STAMP)
	$(PY) scripts/build_results.py
	$(PY) scripts/build_evidence.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
