# Two commands do all set-up on a fresh machine: `make demo` and `make test`; `make docs` builds the site.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# A CPU wheel of this version is served here; an unpinned torch pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.tiltedsam-installed
DOCS_STAMP := $(VENV)/.tiltedsam-docs-installed

.PHONY: demo test docs lint format clean reproduce results

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

# The docs extra (MkDocs, Material, mkdocstrings) on top of the test install (which brings the CPU torch).
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -e '.[docs]'
	touch $(DOCS_STAMP)

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

# docs/results.md from its template and the stored runs (nothing typed by hand).
results: $(STAMP)
	$(PY) scripts/build_results.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
