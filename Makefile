# Set-up is part of every target: a fresh machine needs only Python >= 3.10 (this one: 3.11) and make.
# torch is installed FIRST and pinned to the CPU build lying on this machine's disk; on a GPU machine,
# install your CUDA build of torch into .venv before `make` (see README) and it is kept.
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: demo test install clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/implicitseg demo

# Two pytest workers, one torch thread each (2 cores).
test: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/pytest -n 2 --durations=15

clean-venv:
	rm -rf $(VENV)
