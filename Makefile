# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch that this machine offers; installed before the package so that the
# package's torch range is already satisfied and no CUDA build is pulled.
TORCH_PIN := torch==2.13.0
DEMO_OUT ?= demo_out

.PHONY: demo test venv clean clickme-web dist

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The ClickMe experiment page: jsPsych from npm (package-lock.json committed, node_modules not), built into
# $(CLICKME_WEB)/dist, which `drawgap clickme serve` serves.
CLICKME_WEB := src/drawgap/clickme/web
$(CLICKME_WEB)/dist/index.html: $(CLICKME_WEB)/package-lock.json $(CLICKME_WEB)/build.mjs $(wildcard $(CLICKME_WEB)/src/*)
	cd $(CLICKME_WEB) && npm ci --no-audit --no-fund && npm run build

clickme-web: $(CLICKME_WEB)/dist/index.html

# Release files in dist/: the page first (git ignores it, so a wheel built from a bare clone would lack it), then
# `python -m build`: the sdist and the wheel built from it, with the page, the migrations and the shipped weights.
dist: clickme-web | $(VENV)/.installed
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

demo: $(VENV)/.installed clickme-web
	$(BIN)/drawgap demo --out $(DEMO_OUT)

test: $(VENV)/.installed clickme-web
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache dist
