# Two entry points, both self-installing into .venv: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA := datasets/synthetic
RUN := runs/demo

.PHONY: setup demo serve test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/reid demo --data $(DATA) --run $(RUN) --overwrite  # the demo's own folder

serve: $(STAMP)  # after make demo: the search API and page on the demo index, loopback only
	$(BIN)/reid serve --index $(RUN)/index --checkpoint $(RUN)/best.pt

test: $(STAMP)
	bash .ci/browser.sh  # Chromium for the page's browser test (apt-get, when missing)
	$(BIN)/python -m pytest -q --durations=15  # the slowest tests, to keep the suite near 15 min

lint: $(STAMP)
	$(BIN)/ruff check reid tools tests benchmarks
	$(BIN)/ruff format --check reid tools tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format reid tools tests benchmarks
	$(BIN)/ruff check --fix reid tools tests benchmarks

clean:
	rm -rf $(VENV) runs $(DATA)
