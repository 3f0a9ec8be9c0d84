# The two Quick-start commands (`make demo`, `make test`) set everything up on a fresh machine.
.PHONY: setup demo test bench

setup:
	bash .ci/setup
	bash .ci/setup-label-studio

demo: setup
	.venv/bin/lsal demo

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python bench/strategies.py
