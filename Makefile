# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install lint bench clean system-deps screenshots

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins every dependency, torch==2.13.0 (CPU build) included.
	$(PY) -m pip install --quiet -c constraints.txt -e ".[testing]"
	touch $(STAMP)

install: $(STAMP)

# Xvfb and the X11/GL libraries napari needs (installed with apt when possible).
system-deps:
	scripts/system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/brainfeatures demo

test: $(STAMP)
	scripts/system-deps.sh
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt ruff
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# The README's pictures: one per dock, from the sample, under Xvfb (a few minutes).
screenshots: $(STAMP)
	$(PY) scripts/screenshots.py

bench: $(STAMP)
	$(PY) benchmarks/run.py --list

clean:
	rm -rf $(VENV) build dist .pytest_cache
