# drc — the README's two commands are `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all deps demo test stress lint man lib spank rpm introspection errors clean

all: deps man lib

deps:
	@bash .ci/install-deps

man: deps man/drccli.1 man/drc.1 man/drc.conf.5

man/drc.conf.5: drc/config.py packaging/gen_drc_conf_man.py
	@$(PY) packaging/gen_drc_conf_man.py $@

# Regenerate the shipped D-Bus introspection XML after changing a @method
# (tests/packaging/test_introspection_xml.py fails until you do).
introspection: deps
	@$(PY) packaging/dbus/gen_introspection.py

# Regenerate lib/drc_errors.h (the C error names and messages) after changing drc/core/errors.py
# (tests/clib/test_generated.py fails until you do).
errors: deps
	@$(PY) lib/gen_errors.py

# RPMs from the working tree into build/rpm (or RPM_TOPDIR=...); extra args via RPMBUILD_ARGS.
rpm: deps man
	@bash packaging/rpm/make-rpm.sh $(RPM_TOPDIR)

man/drccli.1: drc/cli/drccli.py pyproject.toml
	@$(VENV)/bin/argparse-manpage --pyfile drc/cli/drccli.py --function build_parser \
	    --prog drccli --project-name drc --version "$$($(PY) -c 'import drc; print(drc.__version__)')" \
	    --manual-title "drc manual" --author "the drc developers" \
	    --description "manage Dynamic RDMA Credentials" --output $@ >/dev/null

man/drc.1: drc/cli/task.py drc/cli/common.py drc/cli/exits.py pyproject.toml
	@$(VENV)/bin/argparse-manpage --pyfile drc/cli/task.py --function build_parser \
	    --prog drc --project-name drc --version "$$($(PY) -c 'import drc; print(drc.__version__)')" \
	    --manual-title "drc manual" --author "the drc developers" \
	    --description "Dynamic RDMA Credentials for job scripts" --output $@ >/dev/null

lib: deps
	@$(MAKE) -s -C lib

spank: deps
	@$(MAKE) -s -C plugins/spank

demo: deps lib
	@$(PY) -m drc.embedded.demo

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: deps man lint lib spank
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The load, fault and fuzz suite at full size (10,000 simulated nodes, 200 SIGKILLs each of
# DRCS and DRCC, >= 100,000 fuzzed inputs ...): one table, non-zero exit when a figure is
# missed. Up to 30 minutes; `make test` runs the same code small.
stress: deps lib
	@$(PY) tests/stress/report.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache man/drccli.1 man/drc.1 man/drc.conf.5
	$(MAKE) -C lib clean
	$(MAKE) -C plugins/spank clean

