# ray-ft-webhook developer commands. Everything a target needs is installed by the target itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8443

.PHONY: run test test-deps lint venv clean fuzz faults mutate

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

certs/tls.crt: | venv
	$(PY) -m webhook certs generate --out certs --service ray-ft-webhook --namespace ray-ft-webhook \
		--ip 127.0.0.1 > certs/cabundle.b64
	@echo "dev certificates written to certs/ (CA: certs/ca.crt)"

## run: serve the webhook on https://127.0.0.1:$(PORT) with the quick start's RayCluster from examples/
run: venv certs/tls.crt
	@echo "try: curl --cacert certs/ca.crt -H 'Content-Type: application/json' \\"
	@echo "       --data @examples/admissionreview-head.json https://127.0.0.1:$(PORT)/mutate"
	$(PY) -m webhook serve --host 127.0.0.1 --port $(PORT) --tls-cert certs/tls.crt --tls-key certs/tls.key \
		--rayclusters-from examples/rayclusters

## lint: ruff, the import rules of the layers (hack/check_layers.py) and mypy (strict on webhook.core)
lint: venv
	$(PY) -m ruff check webhook tests bench hack
	$(PY) hack/check_layers.py
	$(PY) -m mypy

## test-deps: what the real-Ray and image tiers need (Debian packages as root, Ray into the venv); the
## e2e and KubeRay tiers build their binaries themselves. Outside CI a failure here only means skipped tiers.
test-deps: venv
	@bash hack/install-realray.sh $(VENV) || { [ "$$CI" = true ] && exit 1; echo "real-Ray tier will skip"; }
	@bash hack/install-podman.sh $(VENV) >/dev/null || { [ "$$CI" = true ] && exit 1; echo "image tier will skip"; }

## test: set up and run the whole test suite (every tier; see README "Testing")
test: venv lint test-deps
	$(PY) -m pytest

## fuzz: the fuzz tier at 20 times its CI size with a fresh seed (FUZZ_SCALE, FUZZ_SEED to replay a failure)
fuzz: venv
	@seed=$${FUZZ_SEED:-$$RANDOM$$RANDOM}; scale=$${FUZZ_SCALE:-20}; echo "FUZZ_SEED=$$seed FUZZ_SCALE=$$scale"; \
	FUZZ_SEED=$$seed FUZZ_SCALE=$$scale $(PY) -m pytest -m fuzz -q --durations=0

## faults: the faults tier with 4 times longer phases at 40 pods/s (FAULTS_SCALE, FAULTS_RATE); prints the figures
faults: venv
	@scale=$${FAULTS_SCALE:-4}; rate=$${FAULTS_RATE:-40}; echo "FAULTS_SCALE=$$scale FAULTS_RATE=$$rate"; \
	FAULTS_SCALE=$$scale FAULTS_RATE=$$rate $(PY) -m pytest -m faults -q --durations=0

## mutate: mutation testing of webhook/core with mutmut (the fast unit tests, MUTATE_JOBS=2 processes, about
## 15 min on 2 cores); writes the score and every surviving mutant to docs/mutation.md (hack/mutation_report.py)
mutate: $(VENV)/.mutate-installed
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $${MUTATE_JOBS:-2}
	$(PY) hack/mutation_report.py

$(VENV)/.mutate-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,mutate]'
	@touch $@

clean:
	rm -rf $(VENV) mutants certs/*.crt certs/*.key certs/*.b64 .pytest_cache .ruff_cache .hypothesis

## bench: ray-ft-webhook vs a bare uvicorn ceiling, kopf and controller-runtime, one core each (docs/benchmarks.md)
.PHONY: bench
bench: venv
	$(PY) -m pip install --quiet -r bench/requirements.txt
	bash bench/build.sh >/dev/null
	$(PY) bench/run.py $(BENCH_ARGS)

## abuse: what a stranger on the pod network can do to one serve process: RSS and probe latency per attack
## (bench/abuse.py; ABUSE_ARGS="--source DIR" measures another checkout, e.g. a git worktree of an older commit)
.PHONY: abuse
abuse: venv
	$(PY) bench/abuse.py $(ABUSE_ARGS)

.PHONY: demo
## demo: the real KubeRay operator creates Ray pods on a local control plane, the webhook configures them (Ctrl-C stops)
demo: venv
	$(PY) hack/demo.py
