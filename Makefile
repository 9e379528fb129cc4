# Two commands do everything on a fresh machine with Python 3.11:
#   make serve   set up, then serve the site on http://127.0.0.1:8000 (each saved page re-checked live)
#   make test    set up, then run every test (snippets, page code, notebooks, build, browser)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export NO_MKDOCS_2_WARNING := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup serve build test format experiments check new review publish mutate bench notebooks clean

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

# Lint and format checks first (seconds), then every test.
LINTED := kb tests snippets devtools
test: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python -m kb.testrun -n 2 --dist loadgroup

# Apply ruff's fixes and formatting (what `make test` checks).
format: setup
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

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

# make publish [REMOTE=origin] [BRANCH=gh-pages] [SITE_URL=https://...]: the strict site, pushed to that branch
publish: setup
	$(BIN)/kb publish $(if $(REMOTE),--remote "$(REMOTE)") $(if $(BRANCH),--branch "$(BRANCH)") $(if $(SITE_URL),--site-url "$(SITE_URL)")

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
