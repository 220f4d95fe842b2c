# drc — the README's two commands are `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all deps demo test lint man lib clean

all: deps man lib

deps:
	@bash .ci/install-deps

man: deps man/drccli.1

man/drccli.1: drc/cli/drccli.py pyproject.toml
	@$(VENV)/bin/argparse-manpage --pyfile drc/cli/drccli.py --function build_parser \
	    --prog drccli --project-name drc --version "$$($(PY) -c 'import drc; print(drc.__version__)')" \
	    --manual-title "drc manual" --author "the drc developers" \
	    --description "manage Dynamic RDMA Credentials" --output $@ >/dev/null

lib: deps
	@$(MAKE) -s -C lib

demo: deps lib
	@$(PY) -m drc.embedded.demo

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: deps man lint lib
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache man/drccli.1
	$(MAKE) -C lib clean

