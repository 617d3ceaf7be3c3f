# Front door of the bundle. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# KServe's ModelServer runs in a venv of its own: kserve caps protobuf, psutil and pandas below
# the pins of .venv (requirements/kserve.txt).
KVENV  ?= .venv-kserve
KPY    := $(KVENV)/bin/python
# Evidently's drift report (make drift-report) runs in a venv of its own too: evidently 0.7.23
# needs pandas 2, below .venv's pandas 3.1.1 (requirements/report.txt).
RVENV  ?= .venv-report
RPY    := $(RVENV)/bin/python
KSERVE_HTTP_PORT ?= 8085
KSERVE_GRPC_PORT ?= 8087
# Every folder under model_archives/ is a served model: its name is the .mar, the URL and
# the Locust user class.
MODELS ?= $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard model_archives/*/archive.yaml)))))
# The data mirror (README "Data"): DATA_MIRROR from the environment, else ../shared/data when
# a mirror sits beside the checkout (as on the project's machines and in CI); with neither,
# every dataset is downloaded from its own source.
DATA_MIRROR ?= $(if $(wildcard ../shared/data/PROVENANCE.md),$(abspath ../shared/data))
ifneq ($(DATA_MIRROR),)
export DATA_MIRROR
endif
TRAIN_ARGS ?=
PYTEST_ARGS ?=
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv java prometheus monitor monitor-stop bench-metrics data train archive examples serve stop status test test-unit test-e2e \
        bench lint clean image image-train image-train-test image-test online-init online-arrive online-step \
        online-watch online-status online-reconcile online-restore pools loadtest profile \
        chaos overload soak fuzz contract bench-parse bench-tokenize bench-peers peers-venv kserve-venv serve-kserve report-venv \
        drift-report predict robustness repro pipeline containers tune profile-train bench-compile bench-train bench-memory

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create .venv and install the pinned requirements

$(VENV)/.installed: requirements/serve.txt requirements/train.txt requirements/monitor.txt requirements/dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	@touch $@

java: venv ## Java 17+ (with apt if missing), and the frontend's form-decoding fix in .venv's jar
	@scripts/ensure_java.sh --jdk
	@$(PY) serve/frontend_patch.py

prometheus: ## Check for prometheus and promtool and install Debian's package with apt if missing
	@scripts/ensure_prometheus.sh

MONITOR_PORT ?= 9090
monitor: venv prometheus ## Start Prometheus on 127.0.0.1:9090 (MONITOR_PORT): scrapes TorchServe and the monitor, evaluates the alerts
	$(PY) -m serve monitor --port $(MONITOR_PORT)

monitor-stop: ## Stop the Prometheus of `make monitor`
	-@$(PY) -m serve monitor --stop

data: data/.prepared ## Get the datasets (links from $$DATA_MIRROR when set, else downloads)

data/.prepared: | $(VENV)/.installed
	$(PY) -m train.core.prepare
	@touch $@

# A missing artifact comes from the remote model store when the remote holds the one that this
# checkout's code, data and params train (dvc.lock; train/store.py). Otherwise it is trained,
# then recorded in dvc.lock and pushed. A run with TRAIN_ARGS is none of dvc.lock's: it trains,
# and is neither pulled nor pushed.
artifacts/%/model.pt: | $(VENV)/.installed data/.prepared
	@if [ -z "$(TRAIN_ARGS)" ] && $(PY) -m train.store pull $*; then :; else \
	  $(PY) -m train experiment=$* $(TRAIN_ARGS) && \
	  { [ -n "$(TRAIN_ARGS)" ] || $(PY) -m train.store push $* || true; }; fi

train: $(MODELS:%=artifacts/%/model.pt) ## Train every model whose artifact is missing

model_store/%.mar: artifacts/%/model.pt model_archives/%/model-config.yaml \
                   model_archives/%/archive.yaml $(wildcard handlers/*.py) serve/archive.py
	$(PY) -m serve build $*

archive: $(MODELS:%=model_store/%.mar) ## Build the .mar files into model_store/

repro: venv ## dvc repro: rebuild what changed in dvc.yaml's pipeline (code, data, params), then `dvc push`
	$(BIN)/dvc repro && $(BIN)/dvc push

pipeline: venv ## Rewrite dvc.yaml from the registry and the configs (train/pipeline.py)
	$(PY) -m train.pipeline

examples: examples/index.json ## Write a real example request per model (from the data)

examples/index.json: $(wildcard model_archives/*/archive.yaml) | data/.prepared
	$(PY) -m train.core.examples

# Serves in stages (serve/staged.py): TorchServe starts with the .mar files that are up to date,
# then each other model is trained and archived (make model_store/<name>.mar) and registered.
serve: venv java data examples ## Set up everything and start TorchServe; models join as each is trained
	$(PY) -m serve start --staged

# `make predict MODEL=cora_gcn INPUT=examples/cora_gcn.json`: the answer `make serve` would give
# (its .mar rebuilt first when stale, as `make serve` does), printed on stdout; CONTENT_TYPE
# names the body's type when the file's extension does not.
MODEL        ?=
INPUT        ?=
CONTENT_TYPE ?=
predict: venv ## A packaged model's answer to a request file, no server: MODEL=<name> INPUT=<file> [CONTENT_TYPE=t]
	@test -n "$(MODEL)" -a -n "$(INPUT)" || \
	  { echo "usage: make predict MODEL=<name> INPUT=<file> [CONTENT_TYPE=type]" >&2; exit 2; }
	@test -n "$(filter $(MODEL),$(MODELS))" || { echo "$(MODEL): not one of $(MODELS)" >&2; exit 2; }
	@$(MAKE) -s --no-print-directory model_store/$(MODEL).mar >&2
	@$(PY) -m serve.predict '$(MODEL)' '$(INPUT)' $(if $(CONTENT_TYPE),--content-type '$(CONTENT_TYPE)')

# Hyperparameter studies (train/tune.py, docs/tuning.md): configs/tune/<MODEL>.yaml, on the
# validation metric only; TRIALS overrides the study's own count.
TRIALS ?=
tune: venv data ## Optuna study of MODEL on its validation metric; writes benchmarks/results/tuning/<MODEL>.json
	@test -n "$(MODEL)" || { echo "usage: make tune MODEL=<name> [TRIALS=n] (studies: configs/tune/)" >&2; exit 2; }
	$(PY) -m train.tune '$(MODEL)' $(if $(TRIALS),--trials $(TRIALS))

profile-train: venv data ## torch.profiler trace of MODEL's training steps; writes benchmarks/results/train_profile/<MODEL>.json
	@test -n "$(MODEL)" || { echo "usage: make profile-train MODEL=<name>" >&2; exit 2; }
	$(PY) -m train.profile_train '$(MODEL)'

kserve-venv: $(KVENV)/.installed ## Create .venv-kserve: the serving stack and KServe's ModelServer

$(KVENV)/.installed: requirements/kserve.txt requirements/serve.txt
	@test -x $(KPY) || $(PYTHON) -m venv $(KVENV)
	$(KPY) -m pip install -q --upgrade pip
	$(KPY) -m pip install -q -r requirements/kserve.txt
	@touch $@

serve-kserve: kserve-venv data archive ## The same .mar files under KServe's ModelServer (v1 + v2, loopback), in the foreground
	$(KPY) -m serve.kserve_server --store model_store --host 127.0.0.1 \
	  --http-port $(KSERVE_HTTP_PORT) --grpc-port $(KSERVE_GRPC_PORT)

report-venv: $(RVENV)/.installed ## Create .venv-report: Evidently for make drift-report

$(RVENV)/.installed: requirements/report.txt
	@test -x $(RPY) || $(PYTHON) -m venv $(RVENV)
	$(RPY) -m pip install -q --upgrade pip
	$(RPY) -m pip install -q -r requirements/report.txt
	@touch $@

MODEL ?=
drift-report: report-venv ## Evidently drift report, MODEL's reference vs its payload log window (reports/drift/)
	@test -n "$(MODEL)" || { echo "usage: make drift-report MODEL=<name>" >&2; exit 2; }
	$(RPY) -m monitor.report $(MODEL) --store model_store --payload-dir payload_log --out reports/drift

ROBUSTNESS_ARGS ?=
robustness: venv data archive ## Every model on held-out data under shifts at 3 severities, and the drift monitor's flag rates (docs/robustness.md)
	$(PY) -m benchmarks.robustness $(ROBUSTNESS_ARGS)

stop: ## Stop TorchServe, its v2 metadata server and the drift monitor
	-@$(PY) -m serve stop

status: ## Is TorchServe up, and which models it serves
	@$(PY) -m serve status

# `make lint` first: a tree that does not lint is not worth the e2e minutes.
COV_FAIL_UNDER ?= 80
test: venv kserve-venv report-venv java prometheus lint ## Lint, then the whole test suite (unit, then e2e against the real torchserve)
	$(PY) -m pytest --cov=handlers --cov=train --cov=serve --cov=online \
	  --cov-report=term-missing:skip-covered --cov-fail-under=$(COV_FAIL_UNDER) $(PYTEST_ARGS)

test-unit: venv java prometheus ## Unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-e2e: venv kserve-venv java prometheus ## End-to-end tests only
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

bench: venv java archive ## In-process vs served latency; writes benchmarks/results/
	$(PY) -m benchmarks.latency

BENCH_METRICS_ARGS ?=
bench-metrics: venv java archive examples ## p50 at 1 client with the model metrics on and off; writes benchmarks/results/metrics_cost.json
	$(PY) -m benchmarks.metrics_cost $(BENCH_METRICS_ARGS)

# Load tests (docs/loadtests.md). HOST/TOKEN point them at a remote deployment.
HOST        ?= http://127.0.0.1:8080
TOKEN       ?=
USERS       ?= 8
RUN_TIME    ?= 60s
LOAD_MODELS ?=
LOCUST_ARGS ?=
THRESHOLDS   = $(if $(MAX_FAIL_RATIO),--max-fail-ratio $(MAX_FAIL_RATIO)) \
               $(if $(P95_MS),--max-p95-ms $(P95_MS)) $(if $(P99_MS),--max-p99-ms $(P99_MS))

pools: loadtests/pool/index.json ## Write real, varied request pools for the load tests (from the data)

loadtests/pool/index.json: $(wildcard model_archives/*/archive.yaml) train/core/pools.py | data/.prepared
	$(PY) -m train.core.pools

loadtest: venv pools ## Headless Locust run (CSV, HTML, summary in loadtests/results/); fails on missed thresholds
	@mkdir -p loadtests/results
	@# The local token goes only to a loopback HOST: a remote one gets TOKEN or nothing.
	LOADTEST_TOKEN="$(or $(TOKEN),$(shell $(PY) -m serve token --host '$(HOST)'))" \
	$(BIN)/locust -f loadtests/locustfile.py --headless --host $(HOST) -u $(USERS) -r $(USERS) \
	  -t $(RUN_TIME) --csv loadtests/results/run --csv-full-history \
	  --html loadtests/results/report.html --summary-json loadtests/results/summary.json \
	  $(THRESHOLDS) $(LOCUST_ARGS) $(LOAD_MODELS)

profile: venv java archive examples pools ## Concurrency sweep per model and server setting; writes benchmarks/results/report.md
	$(PY) -m benchmarks.profile

# Reliability benchmarks (docs/reliability.md): each starts its own torchserve on free ports;
# run them on a quiet machine. CHAOS_ARGS, OVERLOAD_ARGS, SOAK_ARGS pass options through.
CHAOS_ARGS    ?=
OVERLOAD_ARGS ?=
SOAK_ARGS     ?=
chaos: venv java archive pools ## Kill a worker of each model under load, worst request's RSS; writes benchmarks/results/faults.json
	$(PY) -m benchmarks.faults $(CHAOS_ARGS)

overload: venv java archive pools ## Twice the saturation rate: shed ratio, admitted p99, recovery; writes benchmarks/results/overload.json
	$(PY) -m benchmarks.overload $(OVERLOAD_ARGS)

soak: venv java archive pools ## 10 min at 80% of saturation, every model: RSS slopes, p99 per minute; writes benchmarks/results/soak.json
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

ONLINE_ARGS ?=
online-init: venv ## Online QM9 loop: cut QM9 into shards, version the first data state with DVC
	$(PY) -m online init $(ONLINE_ARGS)
online-arrive: venv ## Online QM9 loop: the next shard arrives (a new DVC data version)
	$(PY) -m online arrive $(ONLINE_ARGS)
online-step: venv ## Online QM9 loop: retrain if data grew enough, safety gate, hot-swap qm9_et
	$(PY) -m online step $(ONLINE_ARGS)
online-watch: venv ## Online QM9 loop: a shard arrives and a step runs every interval
	$(PY) -m online watch $(ONLINE_ARGS)
online-status: venv ## Online QM9 loop: data versions, lineage, what the server serves
	$(PY) -m online status $(ONLINE_ARGS)
online-reconcile: venv ## Online QM9 loop: after a server restart, serve the lineage's version again
	$(PY) -m online reconcile $(ONLINE_ARGS)
DATA_VERSION ?=
online-restore: venv ## Online QM9 loop: check data version DATA_VERSION=K out of DVC
	@test -n "$(DATA_VERSION)" || { echo "usage: make online-restore DATA_VERSION=K" >&2; exit 2; }
	$(PY) -m online restore $(DATA_VERSION) $(ONLINE_ARGS)

IMAGE       ?= localhost/torchserve-bundle:latest
TRAIN_IMAGE ?= localhost/torchserve-bundle-train:latest

containers: ## podman, runc and debootstrap for the image targets (with apt if missing)
	@scripts/ensure_containers.sh

image: containers archive ## Build the serving image with podman (base image and wheelhouse made when missing)
	docker/base-image.sh
	@ls docker/wheelhouse/torch-*.whl >/dev/null 2>&1 || docker/wheelhouse.sh
	docker/podman.sh build --network host --format docker --target serve -t $(IMAGE) .

image-train: containers venv ## Build the training image (docker/wheelhouse.sh requirements/train.txt first)
	docker/base-image.sh
	docker/podman.sh build --network host --format docker --target train -t $(TRAIN_IMAGE) .

# The quickest real training job, run in the training image by `make image-train-test`.
TRAIN_TEST_EXPERIMENT ?= cora_gcn
image-train-test: containers venv ## Run the training image on a short real job (mirror mounted, no network); checks its export
	$(PY) scripts/image_train_test.py --image $(TRAIN_IMAGE) --experiment $(TRAIN_TEST_EXPERIMENT)

image-test: containers venv java archive examples ## Build the image, run it Cloud Run/Vertex-style, compare with a local server (opt-in: root + podman)
	$(PY) scripts/image_test.py --image $(IMAGE)

# Reliability (docs/reliability.md). CI sends 1,500 of these (tests/e2e/test_fuzz.py).
FUZZ_REQUESTS ?= 10000
FUZZ_ARGS ?=
fuzz: venv java archive examples ## Generated malformed requests (10,000) against a real torchserve; writes benchmarks/results/fuzz.json
	$(PY) -m fuzz --requests $(FUZZ_REQUESTS) $(FUZZ_ARGS)

contract: venv ## Regenerate docs/schemas/ and docs/openapi.json from handlers/contract.py
	$(PY) -m serve.contract

bench-parse: venv archive examples ## Request parse time per model (the example in its .mar); writes benchmarks/results/parse-after.json
	$(PY) -m benchmarks.parse

# The peers (benchmarks/peers.py): LitServe goes into the KServe venv; wrk is Debian's.
$(KVENV)/.peers-installed: requirements/peers.txt $(KVENV)/.installed
	$(KPY) -m pip install -q -r requirements/peers.txt
	@touch $@

peers-venv: $(KVENV)/.peers-installed ## LitServe in the KServe venv, and wrk (apt), for make bench-peers
	@scripts/ensure_wrk.sh

bench-peers: venv java archive examples peers-venv ## This bundle against KServe and LitServe on the same models, with wrk; writes benchmarks/results/peers.json
	$(PY) -m benchmarks.peers $(PEERS_ARGS)

bench-train: venv data ## DDP against one process (mutag_gcn), flowers decoding workers 0/1/2; writes benchmarks/results/train_speed.json
	$(PY) -m benchmarks.train_speed

COMPILE_ARGS ?=
bench-compile: venv archive examples ## Eager, TorchScript, torch.compile, int8 and AOTInductor per model; writes benchmarks/results/compile.json
	$(PY) -m benchmarks.compile $(COMPILE_ARGS)

BENCH_MEMORY_ARGS ?=
bench-memory: image pools ## The serving container's memory, idle and under Locust load (every model); writes benchmarks/results/container_memory.json
	$(PY) -m benchmarks.container_memory --image $(IMAGE) $(BENCH_MEMORY_ARGS)

bench-tokenize: venv data examples ## The text handler's tokenization, whole review vs tokenize_cut; writes benchmarks/results/tokenize.json
	$(PY) -m benchmarks.tokenize

lint: venv ## ruff lint and format check, mypy on handlers/, serve/ and online/
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy

clean: ## Remove built archives and examples (keeps data and trained artifacts)
	rm -rf model_store examples
