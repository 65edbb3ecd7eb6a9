# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint clean-venv ui train-tiny train-tiny-plain

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@# torch first, pinned: the machine carries a CPU build of 2.13.0, and an unpinned torch would pull CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stillmotion demo -o out

ui: $(STAMP)
	$(VENV)/bin/stillmotion ui

# Reproduce the bundled model (docs/training.md); DATA = the shared data folder.
DATA ?= ../shared/data
train-tiny: $(STAMP)
	bash -o pipefail -c '$(PY) -u scripts/train_tiny.py --data $(DATA) 2>&1 | tee docs/runs/train-tiny.log'

# The plain tiny image-to-video model (no motion modules): the stand-in for stock SVD (docs/training.md).
train-tiny-plain: $(STAMP)
	bash -o pipefail -c '$(PY) -u scripts/train_tiny.py --variant plain --data $(DATA) 2>&1 | tee docs/runs/train-tiny-plain.log'

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
