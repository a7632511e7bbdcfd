#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/orgdir (`make helm-check`, also part of `make test`):
#   1. finds helm (PATH, $(go env GOPATH)/bin) or installs it with `go install`;
#   2. helm lint --strict and helm template for the default values and each
#      set in deploy/helm/ci-values/;
#   3. a wrong value (replicaCount "two") must fail with the schema's message;
#   4. tests/helm/test_chart.py: kubernetes-validate of every manifest, the
#      CRDs, routing, alerts and dashboard against the exported metrics.
# `--install-only` stops after step 1 (tests/helm uses it when pytest runs first).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
KUBE_VERSION=1.37.0
CHART=deploy/helm/orgdir
CI_VALUES=deploy/helm/ci-values
start=$(date +%s)

find_helm() {
  if [ -n "${HELM:-}" ] && [ -x "$HELM" ]; then echo "$HELM"; return 0; fi
  if command -v helm >/dev/null 2>&1; then command -v helm; return 0; fi
  if command -v go >/dev/null 2>&1; then
    local gobin
    gobin="$(go env GOBIN)"
    [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
    if [ -x "$gobin/helm" ]; then echo "$gobin/helm"; return 0; fi
  fi
  return 1
}

if ! HELM="$(find_helm)"; then
  if ! command -v go >/dev/null 2>&1; then
    echo "helm-check: helm is missing and so is Go to install it (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION)" >&2
    exit 1
  fi
  echo "==> installing helm $HELM_VERSION (go install; the first build takes a few minutes)"
  GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  HELM="$(find_helm)" || { echo "helm-check: go install did not produce a helm binary" >&2; exit 1; }
fi
export HELM
echo "==> helm: $HELM ($("$HELM" version --short 2>/dev/null || echo unknown version))"
if [ "${1:-}" = "--install-only" ]; then exit 0; fi

# Value sets: the defaults, then every file in ci-values/.
sets=("")
for f in "$CI_VALUES"/*.yaml; do sets+=("$f"); done
[ "${#sets[@]}" -ge 4 ] || { echo "helm-check: expected at least 3 value sets in $CI_VALUES" >&2; exit 1; }

for f in "${sets[@]}"; do
  name="${f:-default values}"
  args=(--kube-version "$KUBE_VERSION")
  [ -n "$f" ] && args+=(--values "$f")
  echo "==> lint + template: $name"
  "$HELM" lint --strict "$CHART" "${args[@]}" >/tmp/helm-check-lint.$$ 2>&1 \
    || { cat /tmp/helm-check-lint.$$; rm -f /tmp/helm-check-lint.$$; echo "helm-check: lint failed ($name)" >&2; exit 1; }
  rm -f /tmp/helm-check-lint.$$
  "$HELM" template orgdir "$CHART" --namespace orgdir "${args[@]}" >/dev/null \
    || { echo "helm-check: template failed ($name)" >&2; exit 1; }
done

echo "==> a wrong value must fail: --set services.registry.replicaCount=two"
if out="$("$HELM" template orgdir "$CHART" --kube-version "$KUBE_VERSION" \
      --set services.registry.replicaCount=two 2>&1)"; then
  echo "helm-check: replicaCount=two was accepted" >&2
  exit 1
fi
if ! grep -q "/services/registry/replicaCount" <<<"$out" || ! grep -q "want integer" <<<"$out"; then
  echo "helm-check: replicaCount=two failed without the schema's message:" >&2
  echo "$out" >&2
  exit 1
fi
echo "    $(grep -m1 "replicaCount" <<<"$out" | sed 's/^[- ]*//')"

# The Python checks: the workspace venv, else the probe venv, else bootstrap the workspace.
PY=""
for candidate in .venv/bin/python /tmp/probe-venv/bin/python; do
  if [ -x "$candidate" ] && "$candidate" -c "import kubernetes_validate, pytest, yaml, jsonschema" 2>/dev/null; then
    PY="$candidate"
    break
  fi
done
if [ -z "$PY" ]; then
  echo "==> no Python with kubernetes-validate and pytest: running scripts/bootstrap.sh"
  bash scripts/bootstrap.sh
  PY=.venv/bin/python
fi
echo "==> pytest tests/helm ($PY)"
# Own options only: the chart checks do not depend on the services' pytest plugins.
"$PY" -m pytest tests/helm -q -p no:cacheprovider -o addopts=""

echo "==> helm-check passed in $(( $(date +%s) - start ))s"
