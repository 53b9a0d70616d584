# Two commands on a fresh machine: `make demo` and `make test`. Everything they need is
# installed here, into a git-ignored .venv (and Debian packages where a test needs them).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint format clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@command -v git >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends git)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart/driver.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check mlws tests bench examples
	$(BIN)/ruff format --check mlws tests bench examples

format: $(STAMP)
	$(BIN)/ruff format mlws tests bench examples
	$(BIN)/ruff check --fix mlws tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info
