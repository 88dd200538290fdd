# Two set-up commands (README): `make demo` and `make test`. Each creates .venv and installs
# requirements.txt itself, so both work on a fresh clone with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_SCRIPT ?= script/run_pipeline.sh

.PHONY: demo test venv clean-venv bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

# The pipeline runs under script/lib/supervise.py, exec'd so that make is its parent: stopping make in
# any way (Ctrl-C, SIGTERM, even SIGKILL) stops the pipeline and every stage it started.
demo: venv
	exec env PYTHON="$(PY)" "$(PY)" -I -S script/lib/supervise.py -- bash $(DEMO_SCRIPT)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
