# txgraph — two commands: `make demo` and `make test`. Both start from a fresh
# machine: they create .venv, install the package, and (test) the QEMU peers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HYPOTHESIS_PROFILE ?= ci

.PHONY: demo test qemu render-tools docs-pictures venv unit differential interop property proofs bench lint fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian's qemu-utils (qemu-img, qemu-io, qemu-nbd), qemu-system-common
# (qemu-storage-daemon) and qemu-system-x86 (qemu-system-x86_64, the oracle of
# the -drive suite) are the peers and oracles of the test suite; nbdkit is the
# third NBD server of `txgraph bench nbd` (what a C server reaches on the same socket).
qemu:
	@if ! command -v qemu-storage-daemon >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1 \
			|| ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v strace >/dev/null 2>&1 \
			|| ! command -v mcopy >/dev/null 2>&1 || ! command -v nbdkit >/dev/null 2>&1; then \
		echo "installing Debian's qemu-utils, qemu-system-common, qemu-system-x86, strace, mtools and nbdkit"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq qemu-utils qemu-system-common \
			qemu-system-x86 strace mtools nbdkit >/dev/null; \
	fi
	@qemu-storage-daemon --version | head -1

# Debian's graphviz lays out the pictures (txgraph show, plan --html); chromium is the
# real browser the HTML reports are tested in.
render-tools:
	@if ! command -v dot >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
		echo "installing Debian's graphviz and chromium"; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq graphviz chromium >/dev/null; \
	fi

# The pictures under docs/ (README): the seed's example graph and the section-3 plan report.
docs-pictures: venv qemu render-tools
	$(PY) tools/docs_pictures.py docs

demo: venv qemu render-tools
	$(VENV)/bin/txgraph demo

test: venv qemu render-tools lint
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest -q -p no:cacheprovider tests proofs

unit: venv
	$(PY) -m pytest -q tests/unit

differential: venv qemu
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest -q tests/differential

interop: venv qemu
	$(PY) -m pytest -q tests/interop

property: venv
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(PY) -m pytest -q tests/property

proofs: venv
	$(PY) -m pytest -q proofs

bench: venv qemu
	$(VENV)/bin/txgraph bench all

LINT_PATHS := txgraph tests proofs tools

# ruff's rule set and the formatter (both configured in pyproject.toml), and the package
# fully typed (mypy --strict). RUFF_ENFORCE=no falls back to pyflakes' rules only
# (docs/architecture.md, "Lint and format").
RUFF_ENFORCE ?= yes
lint: venv
ifeq ($(RUFF_ENFORCE),yes)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
else
	$(VENV)/bin/ruff check --select F,E9 $(LINT_PATHS)
endif
	$(VENV)/bin/mypy --strict txgraph

# apply ruff's fixes (the safe ones plus those pyproject.toml declares safe) and format
fmt: venv
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
