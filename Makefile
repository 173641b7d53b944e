# The two set-up commands of the README: `make report` (the batch report) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
# One intra-op thread: measured faster on the shared 2-core machines (benchmarks/threads.py).
export REGLAB_THREADS ?= 1

.PHONY: env report test

env:
	@VENV=$(VENV) scripts/setup-env.sh

report: env
	$(BIN)/reglab report

test: env
	REGLAB_HEADLESS=1 $(BIN)/python -m pytest tests --nbval-lax --nbval-current-env notebooks -q
