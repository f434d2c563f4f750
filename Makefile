# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench bench-learning clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# pyproject.toml asks for version ranges; constraints.txt pins this machine's builds (torch==2.13.0, the CPU
	# build on its disk: any other torch would pull a CUDA build).
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,plots,tensorboard]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fxai-compat train --config examples/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(PY) -m fxai_compat.bench
	$(PY) -m fxai_compat.bench_envwrap

bench-learning: $(STAMP)
	$(PY) -m fxai_compat.bench --learning

clean:
	rm -rf runs .pytest_cache
