# Two entry points: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv when missing and installs what it needs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test speed clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo writes to the untracked DEMO_DIR, never to the committed results/ and figures/.
DEMO_DIR   ?= out/demo
DEMO_FLAGS ?= --figure11-images 1

demo: $(STAMP)
	$(PY) benchmarks/tightness.py $(DEMO_FLAGS) --results $(DEMO_DIR) --figures $(DEMO_DIR)
	@echo "demo tables and figures are in $(DEMO_DIR)/ (untracked; benchmarks refresh the committed ones only with --write-results)"

test: $(STAMP)
	$(PY) -m pytest -q

speed: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) build out *.egg-info .pytest_cache .hypothesis
