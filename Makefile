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
	@# uv installs the same versions as pip in less time. --compile-bytecode: pip compiles what
	@# it installs, uv does not by default, and where PYTHONDONTWRITEBYTECODE is set every
	@# process would compile pandas, MLflow, Dask... again (the suite took twice as long).
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python \
		-e '.[dev,dask,tabular,sweeps]'
	@# The ssh compute target's tests start real sshd instances on 127.0.0.1; runs use rsync.
	@# The shared-folder tests mount one folder twice with sshfs (FUSE) over such an sshd.
	@command -v git >/dev/null && command -v rsync >/dev/null && test -x /usr/sbin/sshd && \
		command -v sshfs >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends git rsync openssh-server openssh-client sshfs >/dev/null)
	@# The studio's browser tests drive Debian's chromium with Playwright (no browser download).
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null)
	@# Runs asking for Docker run in containers of podman's Docker-compatible service in the
	@# tests (tests/test_docker_runs.py: an image of busybox and this Python, no registry).
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v busybox >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends podman runc busybox-static >/dev/null)
	touch $(STAMP)

# mlws's compiled modules, as a wheel install has them: an editable install has none, and where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines) every process would compile
# mlws's 20,000 lines again (~100-300 ms per supervisor, launcher and script start). Python checks
# each .pyc against its source, so a stale one is never used.
PYC := @$(BIN)/python -m compileall -q mlws >/dev/null

demo: $(STAMP)
	$(PYC)
	$(BIN)/python examples/quickstart/driver.py
	$(BIN)/python examples/pipeline/driver.py

# Six workers, a test file each at a time (most tests wait on subprocesses, sshd or Dask rather
# than the CPU: on 2 cores 1,080 s of tests took 377 s with three workers, about 540 s with two;
# at ~1,800 s of tests, four workers kept the 2 CPUs only ~70% busy over a whole fresh-clone run);
# the slowest files are dealt first (tests/conftest.py, SLOWEST_FIRST), so none runs on alone at
# the end. Before them, alone, the tests that assert throughput or load (marked serial): their
# collection also leaves the assertion-rewritten test modules cached for the six workers (see
# tests/conftest.py). Both passes run; either one failing fails the target.
test: $(STAMP)
	$(PYC)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m serial tests; serial=$$?; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 6 --dist loadfile --no-loadscope-reorder \
		-m "not serial" tests && exit $$serial

bench: $(STAMP)
	$(PYC)
	@# Benchmark 10 loads both servers with wrk.
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends wrk >/dev/null)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check mlws tests bench examples
	$(BIN)/ruff format --check mlws tests bench examples

format: $(STAMP)
	$(BIN)/ruff format mlws tests bench examples
	$(BIN)/ruff check --fix mlws tests bench examples

clean:
	rm -rf $(VENV) build *.egg-info
