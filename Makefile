# symviz: `make run` executes every chapter in quick mode; `make test` runs the whole test suite.
# Both create .venv when it is missing and install everything first.
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
SCALE  ?= quick
DEVICE ?= auto
JOBS   ?= 1
SEED   ?= 0
# torch threads per chapter kernel (empty: as torch and the chapter choose)
THREADS ?=
OUT    ?= build
# torch: the CPU wheel unless an NVIDIA GPU is visible (override with TORCH_SPEC=...)
TORCH_SPEC ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo "torch>=2.2,<2.15"; else echo "torch==2.13.0"; fi)

.PHONY: setup run test lab bench robustness browser-test clean help

help:
	@echo "make run           execute every chapter (SCALE=$(SCALE) DEVICE=$(DEVICE) SEED=$(SEED) THREADS=$(THREADS)) into $(OUT)/ and print the summary"
	@echo "make test          run the whole test suite (unit tests, doctests, every notebook in quick mode)"
	@echo "make lab           open JupyterLab on notebooks/"
	@echo "make bench         time every chapter and the hot models; writes benchmarks/results.md"
	@echo "make robustness    every chapter's claims for seed bases 0, 1000, 2000 x 1, 2 torch threads; writes"
	@echo "                   benchmarks/robustness.md (ONLY=\"04 05\" re-runs those chapters and keeps the other rows)"
	@echo "                   ISA=\"native avx2\" adds columns computed with an AVX2-only CPU's arithmetic; SEEDS=, THREADS= narrow it"
	@echo "make browser-test  run every chapter in a real JupyterLab in headless Chromium"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip "setuptools>=68,<81" wheel
	$(VPY) -m pip install -q "$(TORCH_SPEC)"
	@# setuptools tells every flat-layout editable install that a same-named folder may shadow the package: known, silenced
	PYTHONWARNINGS="ignore:Editable installation" $(VPY) -m pip install -q -e ".[test,browser]"
	$(VPY) -m pip install -q --no-deps $$($(VPY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['symviz']['pip-no-deps']))")
	$(VPY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@touch $@

run: setup
	$(VPY) -m symviz run --scale $(SCALE) --device $(DEVICE) --seed $(SEED) $(if $(THREADS),--threads $(THREADS)) --out $(OUT) --jobs $(JOBS)

test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(VPY) -m pytest -q -ra

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

bench: setup
	$(VPY) benchmarks/run.py --scale $(SCALE) --device $(DEVICE)

robustness: setup
	$(VPY) benchmarks/robustness.py --scale $(SCALE) --device $(DEVICE) --jobs $(JOBS) $(if $(ONLY),--only $(ONLY)) $(if $(ISA),--isa $(ISA)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(THREADS),--threads $(THREADS))

browser-test: setup
	$(VPY) -m pytest -q -ra --durations=0 -m browser tests/test_browser.py
	@echo "screenshots and per-chapter checks: build/screenshots/ (NN.png, NN.json)"

clean:
	rm -rf $(OUT)
