# The entry points people remember. Everything runs from the repository's .venv (made by `setup`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
export UV_PYTHON := 3.11
export UV_PYTHON_DOWNLOADS := never
UV := python3 -m uv
VENV_BIN := .venv/bin
FETALMLOPS := $(VENV_BIN)/fetalmlops

.PHONY: help setup system-packages stack-up stack-down stack-status test test-unit test-cluster lint format proto demo up screenshot bench clean images cluster-up cluster-down

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## Create .venv with every package installed editable and the `fetalmlops` command
	@python3 -m uv --version 2>/dev/null | grep -q "uv $(UV_VERSION)" \
		|| python3 -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --all-packages --frozen
	@echo "ready: source .venv/bin/activate  (then: fetalmlops --help)"

system-packages: ## Debian packages the stack and tests run (PostgreSQL, Tesseract, dcmtk)
	deploy/local/system-packages.sh

stack-up: setup ## Start Kafka (KRaft), MinIO and PostgreSQL on loopback (idempotent)
	$(FETALMLOPS) stack up

stack-down: ## Stop the local stack; no process or port is left behind
	@if [ -x $(FETALMLOPS) ]; then $(FETALMLOPS) stack down; fi

stack-status: ## Show each stack component, its ports and its log file
	$(FETALMLOPS) stack status

test: system-packages stack-up ## Unit tests and integration tests against the real stack (not the cluster's)
	$(VENV_BIN)/pytest -m "not cluster and not images" --durations=25

test-unit: setup ## Only the tests that need no running stack (fast)
	$(VENV_BIN)/pytest -m "not stack and not cluster and not images"

test-cluster: system-packages stack-up ## The images, the chart and Tilt on a real single-node cluster (as root; see the README for times)
	$(VENV_BIN)/pytest -m "cluster or images" --durations=25

lint: setup ## ruff (lint + format check) and mypy (strict) on every package; the pre-commit hooks run the same
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/mypy  # every package, as listed in pyproject.toml's [tool.mypy] files

format: setup ## Apply ruff's fixes and formatting
	$(VENV_BIN)/ruff check --fix .
	$(VENV_BIN)/ruff format .

proto: setup ## Regenerate the event classes from proto/ (checked in)
	$(VENV_BIN)/python proto/generate.py

demo: setup ## The whole loop on `fetalmlops up`, told step by step (about 6 min; Ctrl-C ends it)
	$(VENV_BIN)/python deploy/local/demo/demo.py

up: setup ## Every service in one process on the embedded stand-ins, until Ctrl-C
	$(FETALMLOPS) up

screenshot: setup system-packages ## docs/dashboard.png: the dashboard of a demo run, drawn by Chromium
	$(VENV_BIN)/python deploy/local/demo/demo.py --exit --screenshot docs/dashboard.png

bench: stack-up ## Benchmarks: figures and ratios against a baseline measured in the same run
	$(VENV_BIN)/python benchmarks/bus.py
	$(VENV_BIN)/python benchmarks/ingest.py
	$(VENV_BIN)/python benchmarks/anonymizer.py
	$(VENV_BIN)/python benchmarks/training.py
	$(VENV_BIN)/python benchmarks/pretrained.py
	$(VENV_BIN)/python benchmarks/inference.py
	$(VENV_BIN)/python benchmarks/monitor.py

clean: stack-down ## Remove the virtual environment and tool caches (the stack's cache stays)
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache

images: setup ## Every service's container image, built with buildah, no registry (minutes at first)
	$(VENV_BIN)/python -m fetalmlops.cluster.images

cluster-up: system-packages stack-up ## A real single-node Kubernetes with KServe, the images in it, the chart installed
	$(FETALMLOPS) cluster up
	$(FETALMLOPS) cluster images
	$(FETALMLOPS) cluster install

cluster-down: ## Uninstall the chart and stop the cluster; the host is left as it was
	@if [ -x $(FETALMLOPS) ]; then $(FETALMLOPS) cluster down; fi
