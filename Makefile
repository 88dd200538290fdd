# Two set-up commands (README): `make demo` and `make test`. Each creates .venv and installs
# requirements.txt itself, so both work on a fresh clone with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test venv clean-venv bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	PYTHON="$(PY)" bash script/run_pipeline.sh

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
