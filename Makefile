# nninvert: two commands on a fresh machine
#   make book   create .venv, train or load the models, build the HTML book
#   make test   create .venv if needed, run every test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
# models trained at once by `make train` (each in its own process, sharing the cores)
TRAIN_JOBS ?= 2
STAMP := $(VENV)/.installed-stamp

# The original MNIST files, when a shared data folder sits beside the checkout.
ifneq ($(wildcard ../shared/data/MNIST/raw),)
export NNINVERT_DATA ?= $(abspath ../shared/data)
endif
# Pretrained weights live on a model hub; without network a lookup stalls ~45 s.
# Set HF_HUB_OFFLINE=0 on a machine that reaches the hub to use them.
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: help venv test book train bench clean vendor-js assignments

help:
	@echo "make book    build the book (PROFILE=$(PROFILE); models are trained or loaded first)"
	@echo "make test    run every test"
	@echo "make train   train or load the five models (PROFILE=$(PROFILE))"
	@echo "make bench   run the benchmarks (about 6 min on 2 cores); results in benchmarks/results/"
	@echo "make vendor-js  fetch MathJax and the widget scripts with npm, so the book works offline"
	@echo "make assignments  student versions of notebooks/assignments (solutions removed) in _build/assignments/student/"
	@echo "make clean   remove the built book and test outputs (keeps .venv and model cache)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e ".[test,book]"
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q -ra

train: venv
	$(VENV)/bin/nninvert train all --profile $(PROFILE) --jobs $(TRAIN_JOBS)

# Speed and memory against baselines; needs the trained models (make train).
bench: venv train
	$(PY) benchmarks/run.py

# Executed notebooks are cached by content, so each profile builds in its own folder.
BOOK_OUT := $(if $(filter quick,$(PROFILE)),.,_build/profile-$(PROFILE))

# MathJax, RequireJS and the ipywidgets manager served from the book (npm); without npm the
# book loads them from CDNs. See book/_ext/vendor_js.py.
vendor-js: venv
	$(PY) book/_ext/vendor_js.py

# The execution cache is keyed by each notebook's code cells only, and Sphinx reads (so
# executes) only changed sources; outputs computed with another version of the library are
# dropped, with the parsed pages, so that every page shows what this one computes.
LIB_HASH = $(shell cat $(sort $(wildcard nninvert_lib/*.py nninvert_lib/*/*.py)) | sha256sum | cut -c1-16)

book: venv train vendor-js
	@if [ "$$(cat $(BOOK_OUT)/_build/.library-hash 2>/dev/null)" != "$(LIB_HASH)" ]; then \
		echo "the library changed since the last build: executing every notebook again"; \
		rm -rf $(BOOK_OUT)/_build/.jupyter_cache $(BOOK_OUT)/_build/.doctrees; fi
	NNINVERT_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . --path-output $(BOOK_OUT) -W --keep-going
	@echo $(LIB_HASH) > $(BOOK_OUT)/_build/.library-hash
	@echo "The book ($(PROFILE) profile) is at file://$(abspath $(BOOK_OUT)/_build/html/index.html)"

# Student versions (solutions stripped, hidden tests removed); never committed (_build/ is ignored).
# Grade a submission: $(PY) -m nninvert_lib.assignments grade NOTEBOOK --out grade.json
assignments: venv
	$(PY) -m nninvert_lib.assignments make notebooks/assignments _build/assignments/student

clean:
	rm -rf _build .pytest_cache
