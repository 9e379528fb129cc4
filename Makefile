# Two commands do everything on a fresh machine with Python 3.11:
#   make serve   set up, then serve the site on http://127.0.0.1:8000 (each saved page re-checked live)
#   make test    set up, then run every test (snippets, page code, notebooks, build, browser)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export NO_MKDOCS_2_WARNING := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup serve build test experiments check new review mutate bench notebooks clean

setup: $(STAMP)

# requirements.lock pins every package (torch==2.13.0 is the CPU build on disk);
# it is a constraints file, so the project's own dependency list stays readable.
$(STAMP): pyproject.toml requirements.lock
	@echo "setup: creating $(VENV) and installing the pinned packages (first run: a few minutes, torch is the largest)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	@echo "setup: fetching KaTeX and Mermaid from the npm registry..."
	$(BIN)/kb assets
	touch $@

# mkdocs serve, plus `kb check` of every page you save (its status line turns red or green).
serve: setup
	@echo "serve: building the site, then serving it (the URL is printed when it is ready)"
	$(BIN)/kb serve --dev-addr 127.0.0.1:8000

build: setup
	$(BIN)/mkdocs build --strict

test: setup
	$(BIN)/python -m kb.testrun -n 2 --dist loadgroup

# Re-run the committed experiments (minutes): the Pendulum curves against their CSVs.
experiments: setup
	$(BIN)/python -m pytest -n 0 --experiments -m experiment

# make check PAGE=docs/topics/sac/critic.md   (or PAGE=SAC, or PAGE=snippets/sac/critic.py)
check: setup
	$(BIN)/kb check $(PAGE)

# make new MSG="今天的笔记" TOPIC=SAC   (kb new's other options: .venv/bin/kb new --help)
new: setup
	$(BIN)/kb new $(if $(TOPIC),--topic "$(TOPIC)") $(if $(MSG),-m "$(MSG)",--edit)

review: setup
	$(BIN)/kb review

# Mutation testing of the snippet modules (slow: about an hour on two cores); not part of make test.
mutate: setup
	$(BIN)/python -m devtools.mutate

bench: setup
	$(BIN)/python -m devtools.bench

# Re-execute every notebook in place (their outputs are what the site shows).
notebooks: setup
	for nb in $$(find docs -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort); do \
	  echo "$$nb"; PYTHONPATH=$(CURDIR) $(BIN)/jupyter nbconvert --to notebook --execute --inplace "$$nb" || exit 1; \
	done

clean:
	rm -rf site .cache artifacts .pytest_cache mutants
