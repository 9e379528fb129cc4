# Two commands do everything on a fresh machine with Python 3.11:
#   make serve   set up, then serve the site on http://127.0.0.1:8000
#   make test    set up, then run every test (snippets, page code, notebooks, build, browser)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export NO_MKDOCS_2_WARNING := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup serve build test bench notebooks clean

setup: $(STAMP)

# requirements.lock pins every package (torch==2.13.0 is the CPU build on disk);
# it is a constraints file, so the project's own dependency list stays readable.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	$(BIN)/kb assets
	touch $@

serve: setup
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

build: setup
	$(BIN)/mkdocs build --strict

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: setup
	$(BIN)/python -m kb.bench

# Re-execute every notebook in place (their outputs are what the site shows).
notebooks: setup
	for nb in $$(find docs -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort); do \
	  echo "$$nb"; $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$$nb" || exit 1; \
	done

clean:
	rm -rf site .cache artifacts .pytest_cache
