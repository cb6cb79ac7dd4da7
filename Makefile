PYTHON ?= python

.PHONY: compile debug test test-pure bench bench-compare lint

compile:
	$(PYTHON) -m pip install --no-build-isolation -e .

debug:
	FASTMETRICS_DEBUG=1 $(PYTHON) -m pip install --no-build-isolation -e .

test:
	$(PYTHON) -m pytest

test-pure:
	FASTMETRICS_NO_EXTENSIONS=1 $(PYTHON) -m pytest

bench:
	$(PYTHON) -m bench.decode_report

bench-compare:
	cd bench && asv continuous main HEAD

lint:
	ruff check src tests bench
	ruff format --check src tests bench
	mypy
	cython-lint src/fastmetrics/_core.pyx
