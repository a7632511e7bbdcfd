"""Checks of the Helm chart deploy/helm/orgdir (run by scripts/helm-check.sh and `make test`).

helm renders the chart for the default values and every set in
deploy/helm/ci-values/; each manifest is validated against the Kubernetes
schemas (kubernetes-validate, strict), the CRDs it uses structurally and
against each other, and the alert rules and the Grafana dashboard against the
metric names the services really export. Needs helm: scripts/helm-check.sh
installs it; without it these tests fail (they never skip).
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import functools
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "orgdir"
CI_VALUES = REPO / "deploy" / "helm" / "ci-values"
VALUES_TABLE = REPO / "deploy" / "helm" / "tools" / "values_table.py"
KUBE_VERSION = "1.37.0"
HELM_VERSION = "v3.22.0"
RELEASE = "orgdir"
NAMESPACE = "orgdir"
SERVICES = ("orgunits", "registry", "access-rights", "notifier", "portal")

# A vendor's consumer as `orgdir new-consumer vendor-ad` makes it (templates/consumer/).
VENDOR = "vendor-ad"


@functools.cache
def consumer_snippet() -> Path:
    """The helm-values.yaml of templates/consumer rendered for VENDOR, as a vendor gets it."""
    if str(REPO / "tools") not in sys.path:  # a venv without the workspace installed
        sys.path.insert(0, str(REPO / "tools"))
    from orgdir_tools import template

    tmp = Path(tempfile.mkdtemp(prefix="orgdir-consumer-"))
    atexit.register(shutil.rmtree, tmp, True)
    template.render("consumer", VENDOR, tmp / VENDOR)
    return tmp / VENDOR / "helm-values.yaml"


# The default values plus every file in ci-values/ (at least minimal, full, external-secrets),
# and everything enabled with the template's consumer snippet on top (rendered on first use).
VALUE_SETS: dict[str, list[Path | Callable[[], Path]]] = {
    "default": [],
    **{path.stem: [path] for path in sorted(CI_VALUES.glob("*.yaml"))},
    "vendor-consumer": [CI_VALUES / "full.yaml", consumer_snippet],
}


def value_files(value_set: str) -> list[Path]:
    return [entry if isinstance(entry, Path) else entry() for entry in VALUE_SETS[value_set]]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}

# The metrics the issue allows (shared/orgdir/metrics.py); the scrape must export all of them.
METRIC_CATALOGUE = {
    "orgdir_http_requests_total",
    "orgdir_http_request_duration_seconds_bucket",
    "orgdir_events_published_total",
    "orgdir_events_publish_failures_total",
    "orgdir_events_consumed_total",
    "orgdir_event_handling_seconds_bucket",
    "orgdir_event_lag_seconds_bucket",
    "orgdir_outbox_backlog",
    "orgdir_outbox_oldest_age_seconds",
    "orgdir_dead_letter_messages",
    "orgdir_ready",
    "orgdir_deliveries_total",
    "orgdir_delivery_latency_seconds_bucket",
    "orgdir_delivery_backlog",
    "orgdir_delivery_circuit_open",
    "orgdir_access_revocation_latency_seconds_bucket",
    "orgdir_access_held_revocations",
}
# Prometheus' own series that alerts may use besides the services' metrics.
PROMETHEUS_SERIES = {"up"}


# --------------------------------------------------------------------------- helm


def find_helm() -> str | None:
    """helm from $HELM, PATH or Go's bin directory, like scripts/helm-check.sh."""
    candidates = [os.environ.get("HELM", ""), shutil.which("helm") or ""]
    gobin = gopath = ""
    if shutil.which("go"):
        gobin, gopath = subprocess.run(
            ["go", "env", "GOBIN", "GOPATH"], capture_output=True, text=True, check=False
        ).stdout.split("\n")[:2]
    if gobin.strip():
        candidates.append(str(Path(gobin.strip()) / "helm"))
    candidates.append(str(Path(gopath.strip() or Path.home() / "go") / "bin" / "helm"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    found = find_helm()
    if found is None:
        # Installs helm with `go install` (a few minutes on a fresh machine).
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "helm-check.sh"), "--install-only"],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        found = find_helm()
        if found is None:
            pytest.fail(
                f"helm not found ($HELM, PATH, $(go env GOPATH)/bin) and installing helm "
                f"{HELM_VERSION} with `bash scripts/helm-check.sh --install-only` failed:\n"
                f"{proc.stdout}{proc.stderr}",
                pytrace=False,
            )
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def template_args(value_set: str, chart: Path = CHART, extra: Iterable[str] = ()) -> list[str]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    for path in value_files(value_set):
        args += ["--values", str(path)]
    return [*args, *extra]


@functools.cache
def render(helm: str, value_set: str, extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], ...]:
    proc = run_helm(helm, *template_args(value_set, extra=extra))
    assert proc.returncode == 0, f"helm template ({value_set}) failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def of_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def by_name(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(docs, kind)}


def enabled_services(value_set: str) -> list[str]:
    services = merged_values(value_set)["services"]
    return [name for name in SERVICES if services[name]["enabled"]]


def merged_values(value_set: str) -> dict[str, Any]:
    """The values helm renders a set with: values.yaml overlaid with the set's files."""
    return copy.deepcopy(_merged_values(value_set))


@functools.cache
def _merged_values(value_set: str) -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in value_files(value_set):
        values = _merge(values, yaml.safe_load(path.read_text()) or {})
    return values


# What the chart fills into an extra consumer besides extraConsumerDefaults (orgdir.workloads).
EXTRA_CONSUMER_BASE = {
    "enabled": True,
    "config": {},
    "existingSecret": "",
    "extraEnv": [],
    "egress": [],
    "nodeSelector": {},
    "tolerations": [],
    "affinity": {},
    "image": {"registry": "", "digest": ""},
}


def extra_consumers(value_set: str) -> dict[str, dict[str, Any]]:
    """The enabled extraConsumers by name, merged over the defaults as the chart does."""
    values = merged_values(value_set)
    base = _merge(EXTRA_CONSUMER_BASE, values["extraConsumerDefaults"])
    merged = [_merge(base, entry) for entry in values.get("extraConsumers", [])]
    return {entry["name"]: entry for entry in merged if entry["enabled"]}


def workloads(value_set: str) -> dict[str, dict[str, Any]]:
    """Every enabled service and extra consumer by name, with its values."""
    services = merged_values(value_set)["services"]
    return {name: services[name] for name in enabled_services(value_set)} | extra_consumers(
        value_set
    )


def service_topology() -> tuple[dict[str, list[str]], frozenset[str]]:
    """(queue -> binding patterns, single-active queues) as the services declare them."""
    if str(REPO / "shared") not in sys.path:  # a venv without the workspace installed
        sys.path.insert(0, str(REPO / "shared"))
    from orgdir import topology

    return topology.CONSUMER_QUEUES, topology.SINGLE_ACTIVE


def single_active_queues(value_set: str) -> set[str]:
    """Queues one replica reads at a time: flagged in the values, or declared so by the services."""
    values = merged_values(value_set)
    flagged = {
        consumer["queue"]
        for svc in [*values["services"].values(), *values.get("extraConsumers", [])]
        for consumer in svc["consumers"]
        if consumer["singleActiveConsumer"]
    }
    return flagged | set(service_topology()[1])


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


# ------------------------------------------------------------- metric names


PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    A small tokenizer, not a parser: strings, label matchers, range selectors,
    grouping label lists, numbers, durations and Grafana variables are dropped,
    function names are the identifiers followed by "(", and keywords are
    ignored. Whatever identifier is left is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"(?<![\w:.])\d+(\.\d+)?([eE][+-]?\d+)?([smhdwy]|ms)?\b", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word.lower() in PROMQL_KEYWORDS:
            continue
        if re.match(r"\s*\(", text[match.end() :]):
            continue  # a function
        names.add(word)
    return names


def orgdir_names(expr: str) -> set[str]:
    """Every orgdir_* name in an expression, by plain pattern (a cross-check of the tokenizer)."""
    return set(re.findall(r"\borgdir_[a-z0-9_]+", expr))


def unbalanced(expr: str) -> str | None:
    """None when (), [], {} and quotes pair up in the expression, else what is wrong."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote = ""
    escaped = False
    for position, char in enumerate(expr):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return f"unexpected {char!r} at {position}"
    if quote:
        return f"unterminated string {quote}"
    if stack:
        return f"unclosed {''.join(stack)}"
    return None


def exported_metric_names(exposition: str) -> set[str]:
    """The series names a Prometheus text exposition offers to PromQL.

    `# TYPE` lines count even without samples (a labelled metric with no
    children yet): a histogram offers _bucket, _sum and _count, a counter its
    _total name, a gauge its name. Sample lines add their own names.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {name, f"{name}_sum", f"{name}_count"}
            elif kind == "counter" and not name.endswith("_total"):
                names |= {name, f"{name}_total"}
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


@functools.cache
def scraped_metric_names() -> tuple[str, frozenset[str]]:
    """(how, names): a live scrape of every service's /metrics when orgdir.http exists.

    The app comes from `orgdir.http.create_app(service)` (with `settings=` when
    it takes them), without its lifespan (no database or broker needed);
    /metrics answers from the process registry. Before orgdir.http exists, the registry that
    orgdir.metrics fills is exposed with prometheus_client.generate_latest().
    """
    if str(REPO / "shared") not in sys.path:  # a venv without the workspace installed
        sys.path.insert(0, str(REPO / "shared"))
    if importlib.util.find_spec("orgdir.http") is None:
        import prometheus_client

        import orgdir.metrics  # noqa: F401  (registers every metric)

        text = prometheus_client.generate_latest().decode()
        return "prometheus_client.generate_latest() after import orgdir.metrics", frozenset(
            exported_metric_names(text)
        )

    import httpx

    from orgdir.http import create_app
    from orgdir.settings import Settings

    accepts_settings = "settings" in inspect.signature(create_app).parameters

    async def scrape(service: str) -> str:
        if accepts_settings:
            app = create_app(service, settings=Settings(service_name=service))
        else:
            app = create_app(service)
        # ASGITransport does not run the lifespan: no database or broker needed.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orgdir") as client:
            assert (await client.get("/healthz")).status_code == 200, f"{service}: /healthz"
            response = await client.get("/metrics")
        assert response.status_code == 200, (
            f"GET /metrics of create_app({service!r}) answered {response.status_code}: "
            f"{response.text[:500]}"
        )
        return response.text

    names: set[str] = set()
    for service in SERVICES:
        names |= exported_metric_names(asyncio.run(scrape(service)))
    return "live GET /metrics of orgdir.http.create_app() for each service", frozenset(names)


# ---------------------------------------------------------- CRD structure

DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name", "namespace", "labels"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                "replace",
                "keep",
                "drop",
                "hashmod",
                "labelmap",
                "labeldrop",
                "labelkeep",
                "lowercase",
                "uppercase",
                "keepequal",
                "dropequal",
            ]
        },
    },
}


def crd_schema(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # monitoring.coreos.com/v1 (prometheus-operator), the fields the chart uses.
    "ServiceMonitor": crd_schema(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {**STRING_MAP, "minProperties": 1}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": RELABEL},
                            "metricRelabelings": {"type": "array", "items": RELABEL},
                        },
                    },
                },
            },
        },
    ),
    "PrometheusRule": crd_schema(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "properties": {
                                        "alert": {
                                            "type": "string",
                                            "pattern": "^[A-Z][A-Za-z0-9]*$",
                                        },
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": DURATION},
                                        "labels": {
                                            **STRING_MAP,
                                            "required": ["severity"],
                                            "properties": {
                                                "severity": {
                                                    "enum": ["critical", "warning", "info"]
                                                }
                                            },
                                        },
                                        "annotations": {
                                            **STRING_MAP,
                                            "required": ["summary", "description"],
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    ),
    # keda.sh/v1alpha1 (KEDA 2.x).
    "ScaledObject": crd_schema(
        "keda.sh/v1alpha1",
        "ScaledObject",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"enum": ["cpu", "memory", "rabbitmq"]},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["Utilization", "AverageValue", "Value"]},
                            "authenticationRef": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                            },
                            # KEDA's trigger metadata is map[string]string.
                            "metadata": STRING_MAP,
                        },
                    },
                },
            },
        },
    ),
    "TriggerAuthentication": crd_schema(
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretTargetRef"],
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "key": {"type": "string"},
                        },
                    },
                }
            },
        },
    ),
}


def crd_problems(doc: dict[str, Any], docs: Iterable[dict[str, Any]], value_set: str) -> list[str]:
    """Structure of one custom resource, and its references to the other rendered objects."""
    kind = doc["kind"]
    name = doc["metadata"]["name"]
    validator = jsonschema.Draft7Validator(CRD_SCHEMAS[kind])
    problems = [
        f"{kind}/{name}: {'.'.join(map(str, error.path))}: {error.message}"
        for error in validator.iter_errors(doc)
    ]
    if problems:
        return problems
    docs = list(docs)
    spec = doc["spec"]
    values = merged_values(value_set)
    if kind == "ServiceMonitor":
        selector = spec["selector"]["matchLabels"]
        services = [
            svc
            for svc in of_kind(docs, "Service")
            if selector.items() <= svc["metadata"]["labels"].items()
        ]
        if len(services) != len(workloads(value_set)):
            problems.append(f"ServiceMonitor/{name} selects {len(services)} Services")
        for endpoint in spec["endpoints"]:
            for svc in services:
                ports = {port["name"] for port in svc["spec"]["ports"]}
                if endpoint["port"] not in ports:
                    problems.append(f"endpoint port {endpoint['port']} not in {ports}")
            if endpoint.get("honorLabels") is not True:
                problems.append("honorLabels must be true (the services set their own `service`)")
    elif kind == "ScaledObject":
        target = spec["scaleTargetRef"]["name"]
        if target not in by_name(docs, "Deployment"):
            problems.append(f"ScaledObject/{name} targets missing Deployment {target}")
        if target in {
            h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")
        }:
            problems.append(f"Deployment {target} has both an HPA and a ScaledObject")
        if spec["minReplicaCount"] > spec["maxReplicaCount"]:
            problems.append(f"ScaledObject/{name}: minReplicaCount > maxReplicaCount")
        auths = set(by_name(docs, "TriggerAuthentication"))
        existing = values["keda"]["triggerAuthentication"]["existingName"]
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] == "rabbitmq":
                missing = {"queueName", "mode", "value", "protocol"} - meta.keys()
                if missing:
                    problems.append(f"rabbitmq trigger lacks {sorted(missing)}")
                if meta.get("mode") not in {"QueueLength", "MessageRate"}:
                    problems.append(f"rabbitmq mode {meta.get('mode')!r}")
                if meta.get("protocol") not in {"amqp", "http", "auto"}:
                    problems.append(f"rabbitmq protocol {meta.get('protocol')!r}")
                if "host" in meta:
                    problems.append("the broker URL must come from a TriggerAuthentication")
                ref = trigger.get("authenticationRef", {}).get("name")
                if ref not in auths and ref != existing:
                    problems.append(f"authenticationRef {ref!r} is neither rendered nor configured")
            elif trigger["type"] == "cpu":
                if trigger.get("metricType") != "Utilization" or "value" not in meta:
                    problems.append("cpu trigger needs metricType Utilization and a value")
            if "value" in meta and not re.fullmatch(r"[0-9]+(\.[0-9]+)?", meta["value"]):
                problems.append(f"trigger value {meta.get('value')!r} is not a number")
    elif kind == "TriggerAuthentication":
        secrets = set(by_name(docs, "Secret")) | {values["secrets"]["existingSecret"]}
        for ref in spec["secretTargetRef"]:
            if ref["name"] not in secrets:
                problems.append(f"TriggerAuthentication/{name} reads unknown Secret {ref['name']}")
            if ref["parameter"] != "host":
                problems.append(f"unexpected parameter {ref['parameter']}")
    return problems


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(helm: str, value_set: str) -> None:
    args = [
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for path in value_files(value_set):
        args += ["--values", str(path)]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, f"helm lint --strict ({value_set}):\n{proc.stdout}\n{proc.stderr}"


def test_value_sets_exist() -> None:
    assert {"default", "minimal", "full", "external-secrets"} <= VALUE_SETS.keys()


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_renders_one_set_of_objects_per_service(helm: str, value_set: str) -> None:
    docs = render(helm, value_set)
    seen: set[tuple[str, str]] = set()
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    wanted = {f"{RELEASE}-{name}" for name in workloads(value_set)}
    for kind in ("Deployment", "Service", "ServiceAccount"):
        assert set(by_name(docs, kind)) == wanted, kind
    assert wanted <= set(by_name(docs, "ConfigMap"))


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_manifests_match_kubernetes_schemas(helm: str, value_set: str) -> None:
    docs = render(helm, value_set)
    problems: list[str] = []
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            problems += crd_problems(doc, docs, value_set)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{doc['kind']}: {error.message} (and no structural check for it)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pods_are_locked_down(helm: str, value_set: str) -> None:
    for deployment in of_kind(render(helm, value_set), "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        if merged_values(value_set)["topologySpread"]["enabled"]:
            keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
            assert "kubernetes.io/hostname" in keys, name
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
        assert "memory" in container["resources"]["limits"], name
        port = container["ports"][0]["containerPort"]
        module = name.removeprefix(f"{RELEASE}-").replace("-", "_")
        assert container["command"] == ["uvicorn"], name
        assert container["args"][:6] == [
            "--factory",
            f"{module}.app:create_app",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_nothing_secret_in_configmaps(helm: str, value_set: str) -> None:
    secret_looking = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$|MONGODB_URL|AMQP_URL", re.IGNORECASE)
    for configmap in of_kind(render(helm, value_set), "ConfigMap"):
        for key, value in (configmap.get("data") or {}).items():
            assert not secret_looking.search(key), f"{configmap['metadata']['name']}: {key}"
            assert "://" not in value or "@" not in value, f"credentials in {key}"
    for deployment in of_kind(render(helm, value_set), "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert any("secretRef" in source for source in container["envFrom"])
        assert all(
            "value" not in env or not secret_looking.search(env["name"]) for env in container["env"]
        )


def test_portal_has_its_oidc_client_and_a_sealed_session(helm: str) -> None:
    """The portal signs users in at the chart's issuer as its own client (PKCE); its client secret and
    the key that seals the session cookie come from a Secret, the same for every replica."""
    docs = render(helm, "full")
    data = by_name(docs, "ConfigMap")[f"{RELEASE}-portal"]["data"]
    assert data["ORGDIR_AUTH_MODE"] == "oidc" and data["ORGDIR_OIDC_ISSUER"].startswith("https://")
    assert data["ORGDIR_OIDC_LOGIN_CLIENT_ID"] and "openid" in data["ORGDIR_OIDC_SCOPES"].split()
    assert "ORGDIR_OIDC_REDIRECT_URL" in data and data["ORGDIR_SESSION_HTTPS_ONLY"] == "true"
    assert not {"ORGDIR_OIDC_CLIENT_SECRET", "ORGDIR_SESSION_SECRET"} & data.keys()
    (container,) = by_name(docs, "Deployment")[f"{RELEASE}-portal"]["spec"]["template"]["spec"]["containers"]
    required = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert "ORGDIR_SESSION_SECRET" in required
    secret = by_name(docs, "Secret")[f"{RELEASE}-secrets"]["stringData"]
    assert {"ORGDIR_OIDC_CLIENT_SECRET", "ORGDIR_SESSION_SECRET"} <= secret.keys()


def test_configmap_carries_the_orgdir_settings(helm: str) -> None:
    configmaps = by_name(render(helm, "full"), "ConfigMap")
    data = configmaps[f"{RELEASE}-registry"]["data"]
    assert data["ORGDIR_SERVICE_NAME"] == "registry"
    assert data["ORGDIR_AUTH_MODE"] == "oidc"
    assert data["ORGDIR_OIDC_ISSUER"].startswith("https://")
    assert {"ORGDIR_LOG_LEVEL", "ORGDIR_OIDC_AUDIENCE", "ORGDIR_TIMEZONE"} <= data.keys()
    assert json.loads(data["ORGDIR_OIDC_ALGORITHMS"]) == ["RS256"]  # the services refuse oidc without it
    assert "ORGDIR_ALLOW_STATIC_TOKENS" not in data
    assert configmaps[f"{RELEASE}-orgunits"]["data"]["ORGDIR_SCHEDULER_INTERVAL_SECONDS"] == "15"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_required_secret_keys_stop_the_pod_when_missing(helm: str, value_set: str) -> None:
    values = merged_values(value_set)
    extra = extra_consumers(value_set)
    shared = values["secrets"]["existingSecret"] or f"{RELEASE}-secrets"
    for name, svc in workloads(value_set).items():
        deployment = by_name(render(helm, value_set), "Deployment")[f"{RELEASE}-{name}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        refs = {
            env["name"]: env["valueFrom"]["secretKeyRef"]
            for env in container["env"]
            if "secretKeyRef" in env.get("valueFrom", {})
        }
        assert set(refs) == set(svc["requiredSecretKeys"]), name
        secret = svc["existingSecret"] or shared
        assert all(
            ref == {"name": secret, "key": key, "optional": False} for key, ref in refs.items()
        )
        # An extra consumer reads its own Secret only, never Orgdir's keys.
        sources = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        wanted = [svc["existingSecret"]] if name in extra else [shared, svc["existingSecret"]]
        assert sources == [s for s in wanted if s], name
    assert "ORGDIR_CPR_HASH_KEY" in values["services"]["registry"]["requiredSecretKeys"]


def test_full_set_renders_every_kind(helm: str) -> None:
    kinds = {doc["kind"] for doc in render(helm, "full")}
    assert kinds >= {
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "TriggerAuthentication",
        "Ingress",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_secret_comes_from_existing_secrets(helm: str) -> None:
    docs = render(helm, "external-secrets")
    assert not of_kind(docs, "Secret")
    deployments = by_name(docs, "Deployment")
    (registry,) = deployments[f"{RELEASE}-registry"]["spec"]["template"]["spec"]["containers"]
    refs = [source["secretRef"]["name"] for source in registry["envFrom"] if "secretRef" in source]
    assert refs == ["orgdir-shared", "orgdir-registry"]  # the service's own Secret wins
    required = {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in registry["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert required.keys() == {"ORGDIR_MONGODB_URL", "ORGDIR_AMQP_URL", "ORGDIR_CPR_HASH_KEY", "ORGDIR_ENCRYPTION_KEYS"}
    assert {ref["name"] for ref in required.values()} == {"orgdir-registry"}
    assert all(ref["optional"] is False for ref in required.values())
    assert not of_kind(docs, "TriggerAuthentication")
    for scaled in of_kind(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "rabbitmq":
                assert trigger["authenticationRef"] == {
                    "name": "rabbitmq-management",
                    "kind": "ClusterTriggerAuthentication",
                }


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_autoscalers(helm: str, value_set: str) -> None:
    docs = render(helm, value_set)
    values = merged_values(value_set)
    hpa = {
        doc["spec"]["scaleTargetRef"]["name"] for doc in of_kind(docs, "HorizontalPodAutoscaler")
    }
    keda = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in of_kind(docs, "ScaledObject")}
    assert not hpa & keda.keys()
    for name, svc in workloads(value_set).items():
        full = f"{RELEASE}-{name}"
        deployment = by_name(docs, "Deployment")[full]
        if not svc["autoscaling"]["enabled"]:
            assert full not in hpa and full not in keda
            assert deployment["spec"]["replicas"] == svc["replicaCount"]
            continue
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
        competing = [c["queue"] for c in svc["consumers"] if not c["singleActiveConsumer"]]
        if values["keda"]["enabled"] and competing:
            queues = [
                trigger["metadata"]["queueName"]
                for trigger in keda[full]["spec"]["triggers"]
                if trigger["type"] == "rabbitmq"
            ]
            assert queues == competing
        else:
            # CPU only: no consumers, KEDA off, or only single-active queues.
            assert full in hpa, name


def test_keda_queue_names(helm: str) -> None:
    docs = render(helm, "full")
    queues = {
        trigger["metadata"]["queueName"]
        for scaled in of_kind(docs, "ScaledObject")
        for trigger in scaled["spec"]["triggers"]
        if trigger["type"] == "rabbitmq"
    }
    assert queues == {"orgunits.registry", "registry.orgunits"}
    # The services with only single-active queues autoscale on CPU.
    assert {f"{RELEASE}-access-rights", f"{RELEASE}-notifier"} <= {
        doc["spec"]["scaleTargetRef"]["name"] for doc in of_kind(docs, "HorizontalPodAutoscaler")
    }


# Every service autoscaled and KEDA on, on top of a value set.
KEDA_EVERYWHERE = (
    "--set",
    "keda.enabled=true",
    *(arg for name in SERVICES for arg in ("--set", f"services.{name}.autoscaling.enabled=true")),
)


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("extra", [(), KEDA_EVERYWHERE], ids=["as-is", "keda-everywhere"])
def test_keda_never_scales_on_a_single_active_queue(
    helm: str, value_set: str, extra: tuple[str, ...]
) -> None:
    # One replica at a time reads a single-active queue: its length says nothing
    # about how many replicas are needed, so it is never a KEDA trigger.
    single = single_active_queues(value_set)
    assert {"access-rights.org", "notifier.all"} <= single
    docs = render(helm, value_set, extra)
    for scaled in of_kind(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "rabbitmq":
                queue = trigger["metadata"]["queueName"]
                assert queue not in single, f"{scaled['metadata']['name']} scales on {queue}"
    if extra:
        scaled_by_keda = {
            doc["spec"]["scaleTargetRef"]["name"] for doc in of_kind(docs, "ScaledObject")
        }
        hpa = {
            doc["spec"]["scaleTargetRef"]["name"]
            for doc in of_kind(docs, "HorizontalPodAutoscaler")
        }
        services = merged_values(value_set)["services"]
        for name in enabled_services(value_set):
            full = f"{RELEASE}-{name}"
            competing = [c for c in services[name]["consumers"] if not c["singleActiveConsumer"]]
            assert (full in scaled_by_keda) == bool(competing), name
            assert (full in hpa) == (not competing), name


def test_chart_consumers_match_the_services_queues() -> None:
    # The consumers values mirror shared/orgdir/topology.py: every queue a
    # service consumes, and whether it is single-active.
    queues, single_active = service_topology()
    services = merged_values("default")["services"]
    for name in SERVICES:
        declared = {queue for queue in queues if queue.startswith(f"{name}.")}
        consumers = services[name]["consumers"]
        assert {c["queue"] for c in consumers} == declared, name
        for consumer in consumers:
            assert consumer["queue"] == f"{name}.{consumer['name']}", consumer
            assert consumer["singleActiveConsumer"] is (consumer["queue"] in single_active), (
                consumer
            )
            if not consumer["singleActiveConsumer"]:
                assert consumer["targetQueueLength"] >= 1, consumer


def test_every_deployment_defaults_to_two_replicas(helm: str) -> None:
    values = merged_values("default")
    deployments = by_name(render(helm, "default"), "Deployment")
    assert set(deployments) == {f"{RELEASE}-{name}" for name in SERVICES}
    for name in SERVICES:
        svc = values["services"][name]
        assert svc["replicaCount"] == 2, name
        assert svc["autoscaling"]["enabled"] is False, name
        assert svc["autoscaling"]["minReplicas"] >= 2, name
        spec = deployments[f"{RELEASE}-{name}"]["spec"]
        assert spec["replicas"] == 2, name
        # A rolling update starts the new pod before it stops an old one.
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_disruption_budget_per_service(helm: str, value_set: str) -> None:
    docs = render(helm, value_set)
    running = workloads(value_set)
    budgets = by_name(docs, "PodDisruptionBudget")
    deployments = by_name(docs, "Deployment")
    wanted = {
        f"{RELEASE}-{name}" for name, svc in running.items() if svc["podDisruptionBudget"]["enabled"]
    }
    assert set(budgets) == wanted
    if value_set == "default":
        assert wanted == {f"{RELEASE}-{name}" for name in SERVICES}
    for full, budget in budgets.items():
        pdb = running[full.removeprefix(f"{RELEASE}-")]["podDisruptionBudget"]
        spec = budget["spec"]
        selector = spec["selector"]["matchLabels"]
        # Selects exactly that service's pods.
        for other, deployment in deployments.items():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert (selector.items() <= labels.items()) == (other == full), (full, other)
        assert selector == deployments[full]["spec"]["selector"]["matchLabels"]
        if pdb["minAvailable"] is None:
            assert "minAvailable" not in spec and spec["maxUnavailable"] == pdb["maxUnavailable"]
        else:
            assert "maxUnavailable" not in spec and spec["minAvailable"] == pdb["minAvailable"]
        if value_set == "default":
            assert spec["minAvailable"] == 1, full
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_one_replica_with_a_budget_is_refused_or_drains(helm: str) -> None:
    # minAvailable 1 on one replica would block every node drain: refused (see
    # test_wrong_values_fail_with_a_clear_message); without minAvailable the budget
    # falls back to maxUnavailable, and without a budget nothing blocks.
    one = ("--set", "services.registry.replicaCount=1")
    budgets = by_name(
        render(
            helm,
            "default",
            (*one, "--set", "services.registry.podDisruptionBudget.minAvailable=null"),
        ),
        "PodDisruptionBudget",
    )
    assert budgets[f"{RELEASE}-registry"]["spec"] == {
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": budgets[f"{RELEASE}-registry"]["spec"]["selector"],
    }
    budgets = by_name(
        render(
            helm, "default", (*one, "--set", "services.registry.podDisruptionBudget.enabled=false")
        ),
        "PodDisruptionBudget",
    )
    assert f"{RELEASE}-registry" not in budgets and f"{RELEASE}-orgunits" in budgets
    # Autoscaled: the floor is minReplicas.
    proc = run_helm(
        helm,
        *template_args(
            "default",
            extra=[
                "--set",
                "services.orgunits.autoscaling.enabled=true",
                "--set",
                "services.orgunits.autoscaling.minReplicas=1",
            ],
        ),
    )
    assert proc.returncode != 0 and "autoscaling.minReplicas 1" in proc.stderr, proc.stderr


def test_no_one_replica_notes_remain() -> None:
    # The services are stateless now: nothing tells operators to run one replica,
    # and the database is MongoDB (FerretDB is gone).
    for path in (CHART / "README.md", CHART / "values.yaml", CHART / "values.schema.json"):
        text = path.read_text()
        for phrase in (
            "FerretDB",
            "defaults to one replica",
            "only on a refresh timer",
            "only on a timer",
            "must run alone",
            "one active consumer each",
        ):
            assert phrase.lower() not in text.lower(), f"{path.name}: {phrase!r}"
    readme = (CHART / "README.md").read_text()
    assert "MongoDB 6+ as a" in readme and "replica set" in readme
    assert "mongo-java-server" in readme


UUID = "0b9c3f4e-5d6a-4b7c-8d9e-0f1a2b3c4d5e"
ROUTES = {
    "/api/v1/facets": "orgunits",
    "/api/v1/classes/x": "orgunits",
    "/api/v1/orgunits": "orgunits",
    f"/api/v1/orgunits/{UUID}": "orgunits",
    f"/api/v1/orgunits/{UUID}/children": "orgunits",
    f"/api/v1/orgunits/{UUID}/history": "orgunits",
    "/api/v1/tree": "orgunits",
    "/api/v1/persons": "registry",
    f"/api/v1/persons/{UUID}/overview": "registry",
    "/api/v1/engagements": "registry",
    "/api/v1/managers": "registry",
    "/api/v1/associations": "registry",
    "/api/v1/leaves": "registry",
    "/api/v1/search": "registry",
    "/api/v1/audit": "registry",
    f"/api/v1/orgunits/{UUID}/people": "registry",
    f"/api/v1/orgunits/{UUID}/manager": "registry",
    "/api/v1/it-systems": "access-rights",
    "/api/v1/roles": "access-rights",
    f"/api/v1/roles/{UUID}/holders": "access-rights",
    "/api/v1/role-groups": "access-rights",
    "/api/v1/assignments": "access-rights",
    "/api/v1/accounts": "access-rights",
    "/api/v1/held-batches": "access-rights",
    f"/api/v1/persons/{UUID}/rights": "access-rights",
    f"/api/v1/orgunits/{UUID}/rights": "access-rights",
    "/api/v1/subscriptions": "notifier",
    f"/api/v1/deliveries/{UUID}/replay": "notifier",
    "/units": "portal",
    f"/units/{UUID}/hire": "portal",
    f"/persons/{UUID}": "portal",
    "/static/htmx.min.js": "portal",
    "/rights": "portal",
    "/login": "portal",
    "/callback": "portal",
    "/metrics": "",
    "/healthz": "",
}


def route(url: str, ingresses: Iterable[dict[str, Any]], host: str) -> str:
    """Which service an ingress-nginx with use-regex sends a path to ("" for none).

    As ingress-nginx does: every path of the host becomes a location, ordered by
    descending length, and the first that matches wins (a Prefix path matches
    whole segments, an ImplementationSpecific path is a case-insensitive regex).
    """
    paths = []
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            if rule["host"] == host:
                paths += rule["http"]["paths"]
    for path in sorted(paths, key=lambda p: len(p["path"]), reverse=True):
        prefix = path["path"].rstrip("/")
        if path["pathType"] == "Prefix":
            hit = url == prefix or url.startswith(prefix + "/")
        else:
            hit = re.match(path["path"], url, re.IGNORECASE) is not None
        if hit:
            return path["backend"]["service"]["name"].removeprefix(f"{RELEASE}-")
    return ""


def test_ingress_routes_each_path_to_its_service(helm: str) -> None:
    ingresses = of_kind(render(helm, "full"), "Ingress")
    plain = by_name(ingresses, "Ingress")[RELEASE]
    regex = by_name(ingresses, "Ingress")[f"{RELEASE}-regex"]
    assert {p["pathType"] for r in plain["spec"]["rules"] for p in r["http"]["paths"]} == {"Prefix"}
    assert {p["pathType"] for r in regex["spec"]["rules"] for p in r["http"]["paths"]} == {
        "ImplementationSpecific"
    }
    assert regex["metadata"]["annotations"]["nginx.ingress.kubernetes.io/use-regex"] == "true"
    for rule in plain["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            # ingress-nginx's strict path validation for Prefix paths.
            assert re.fullmatch(r"/[A-Za-z0-9/_.-]*", path["path"]), path["path"]
    for host in ("orgdir.example.org", "api.orgdir.example.org"):
        wrong = {
            url: (got, want)
            for url, want in ROUTES.items()
            if (got := route(url, ingresses, host)) != want
        }
        assert not wrong, f"{host}: path -> (routed to, expected): {wrong}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--set", "services.registry.replicaCount=two"],
            ["at '/services/registry/replicaCount'", "got string, want integer"],
        ),
        (["--set", "config.authMode=ldap"], ["at '/config/authMode'", "'oidc', 'static'"]),
        (["--set", "services.ledger.enabled=true"], ["at '/services'", "'ledger' not allowed"]),
        (
            ["--set", "metrics.serviceMonitor.enabled=sometimes"],
            ["at '/metrics/serviceMonitor/enabled'"],
        ),
        (
            ["--set", "networkPolicy.mongodb.ports[0]=99999"],
            ["at '/networkPolicy/mongodb/ports/0'"],
        ),
        (["--set", "config.authMode=static"], ["insecureAllowStaticTokens"]),
        (
            ["--set", "config.extra.ORGDIR_CPR_HASH_KEY=x"],
            ["config.extra.ORGDIR_CPR_HASH_KEY looks like a secret"],
        ),
        (["--set", "secrets.existingSecret="], ["ORGDIR_MONGODB_URL is required"]),
        (
            ["--set", "services.registry.replicaCount=1"],
            ["services.registry: podDisruptionBudget.minAvailable 1 with replicaCount 1"],
        ),
    ],
)
def test_wrong_values_fail_with_a_clear_message(
    helm: str, args: list[str], expected: list[str]
) -> None:
    proc = run_helm(helm, *template_args("default", extra=args))
    assert proc.returncode != 0, f"helm template {args} succeeded"
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"


@pytest.mark.parametrize(
    ("consumer", "expected"),
    [
        (
            {"name": "all", "queue": "notifier.all", "targetQueueLength": 50},
            "at '/services/notifier/consumers/0': missing property 'singleActiveConsumer'",
        ),
        (
            {"name": "all", "queue": "notifier.all", "singleActiveConsumer": False},
            "at '/services/notifier/consumers/0': missing property 'targetQueueLength'",
        ),
    ],
    ids=["single-active-unsaid", "competing-without-target"],
)
def test_consumers_say_whether_they_are_single_active(
    helm: str, tmp_path: Path, consumer: dict[str, Any], expected: str
) -> None:
    # An overridden consumers list must say whether a queue is single-active (else
    # KEDA might scale on it), and a competing one needs KEDA's target length.
    values = tmp_path / "consumers.yaml"
    values.write_text(yaml.safe_dump({"services": {"notifier": {"consumers": [consumer]}}}))
    proc = run_helm(helm, *template_args("default", extra=["--values", str(values)]))
    assert proc.returncode != 0, "helm template succeeded"
    assert expected in proc.stderr, proc.stderr


def test_monitoring_auto_follows_the_cluster(helm: str) -> None:
    without = {doc["kind"] for doc in render(helm, "default")}
    assert not without & {"ServiceMonitor", "PrometheusRule"}
    api = (
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    )
    docs = render(helm, "default", api)
    assert {"ServiceMonitor", "PrometheusRule"} <= {doc["kind"] for doc in docs}
    problems = [
        p for doc in docs if doc["kind"] in CRD_KINDS for p in crd_problems(doc, docs, "default")
    ]
    assert not problems, problems


def render_notes(helm: str, value_set: str) -> str:
    # helm template never renders NOTES.txt; a copy of the chart renders it into a ConfigMap.
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "orgdir"
        shutil.copytree(CHART, chart)
        shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-source.txt")
        (chart / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
            'data:\n  notes: {{ tpl (.Files.Get "notes-source.txt") . | toJson }}\n'
        )
        args = template_args(value_set, chart, ["--show-only", "templates/zz-notes.yaml"])
        proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stderr
    notes: str = yaml.safe_load(proc.stdout)["data"]["notes"]
    return notes


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_notes_render(helm: str, value_set: str) -> None:
    notes = render_notes(helm, value_set)
    assert "kubectl" in notes and "/readyz" in notes
    if merged_values(value_set)["secrets"]["existingSecret"]:
        assert "create secret generic" in notes
    if value_set == "vendor-consumer":
        assert f"Extra consumers: {VENDOR} (no ingress; each reads only its own Secret)." in notes
        assert f'{VENDOR} reads only "{VENDOR}-secrets"' in notes
    if value_set == "full":
        assert "KEDA scales orgunits, registry on CPU and queue length" in notes
        assert (
            "Single-active queues (access-rights.org, notifier.all) are never a KEDA trigger"
            in notes
        )


def prometheus_rules(helm: str) -> list[dict[str, Any]]:
    (rule,) = of_kind(render(helm, "full"), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_alerts_cover_what_operators_need(helm: str) -> None:
    rules = {rule["alert"]: rule for rule in prometheus_rules(helm)}
    needs = {
        "OrgdirOutboxBacklogStale": {"orgdir_outbox_oldest_age_seconds"},
        "OrgdirDeadLetterMessages": {"orgdir_dead_letter_messages"},
        "OrgdirConsumerLagHigh": {"orgdir_event_lag_seconds_bucket"},
        "OrgdirHttp5xxRateHigh": {"orgdir_http_requests_total"},
        "OrgdirDeliveryTargetFailing": {"orgdir_deliveries_total", "orgdir_delivery_circuit_open"},
        "OrgdirServiceNotReady": {"orgdir_ready"},
        "OrgdirTargetDown": {"up"},
    }
    for alert, metrics in needs.items():
        assert alert in rules, alert
        assert metrics <= promql_metric_names(rules[alert]["expr"]), alert
    assert "> 300" in rules["OrgdirOutboxBacklogStale"]["expr"]
    assert "> 120" in rules["OrgdirConsumerLagHigh"]["expr"]
    assert rules["OrgdirDeliveryTargetFailing"]["for"] == "15m"
    assert 'status=~"5.."' in rules["OrgdirHttp5xxRateHigh"]["expr"]
    for rule in rules.values():
        assert f'namespace="{NAMESPACE}"' in rule["expr"], rule["alert"]
        assert rule["labels"]["team"] == "orgdir"
        assert rule["annotations"]["runbook_url"].endswith("/" + rule["alert"])


def test_alert_expressions_parse_and_use_exported_metrics(helm: str) -> None:
    how, exported = scraped_metric_names()
    allowed = exported | PROMETHEUS_SERIES
    for rule in prometheus_rules(helm):
        expr = rule["expr"]
        assert unbalanced(expr) is None, f"{rule['alert']}: {unbalanced(expr)}: {expr}"
        names = promql_metric_names(expr)
        assert names, rule["alert"]
        assert {n for n in names if n.startswith("orgdir_")} == orgdir_names(expr), expr
        unknown = names - allowed
        assert not unknown, f"{rule['alert']} uses {unknown}, not exported ({how})"
        assert "{{" not in expr, "an unrendered template in an expression"


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel target and every query variable."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = (
                variable["query"]["query"]
                if isinstance(variable["query"], dict)
                else variable["query"]
            )
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert match, query
            queries.append((f"${variable['name']}", match.group(1)))
    return queries


def test_dashboard_json(helm: str) -> None:
    docs = render(helm, "full")
    configmap = by_name(docs, "ConfigMap")[f"{RELEASE}-dashboards"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "monitoring"
    (raw,) = configmap["data"].values()
    dashboard = json.loads(raw)
    assert dashboard == json.loads((CHART / "dashboards" / "orgdir-overview.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] == "row" or panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    names: set[str] = set()
    for where, expr in dashboard_queries(dashboard):
        assert unbalanced(expr) is None, f"{where}: {unbalanced(expr)}"
        found = promql_metric_names(expr)
        assert {n for n in found if n.startswith("orgdir_")} == orgdir_names(expr), expr
        names |= found
    # request rate, errors, latency; events published/consumed per type; lag; outbox;
    # dead queues; deliveries per target and outcome.
    assert {
        "orgdir_http_requests_total",
        "orgdir_http_request_duration_seconds_bucket",
        "orgdir_events_published_total",
        "orgdir_events_consumed_total",
        "orgdir_event_lag_seconds_bucket",
        "orgdir_outbox_backlog",
        "orgdir_outbox_oldest_age_seconds",
        "orgdir_dead_letter_messages",
        "orgdir_deliveries_total",
    } <= names


def test_dashboard_uses_exported_metrics_only() -> None:
    how, exported = scraped_metric_names()
    dashboard = json.loads((CHART / "dashboards" / "orgdir-overview.json").read_text())
    for where, expr in dashboard_queries(dashboard):
        unknown = promql_metric_names(expr) - exported - PROMETHEUS_SERIES
        assert not unknown, f"{where} uses {unknown}, not exported ({how})"


def test_scrape_exports_the_metric_catalogue() -> None:
    how, exported = scraped_metric_names()
    assert METRIC_CATALOGUE <= exported, f"missing from {how}: {METRIC_CATALOGUE - exported}"


def test_metric_name_helpers() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (service, le) "
        '(rate(orgdir_event_lag_seconds_bucket{a="x{"}[5m]))) > 1e3 '
        "or on (job) up offset 5m unless sum(orgdir_ready) without (pod)"
    )
    assert promql_metric_names(expr) == {"orgdir_event_lag_seconds_bucket", "up", "orgdir_ready"}
    assert unbalanced(expr) is None
    assert unbalanced("sum(rate(x[5m])") == "unclosed ("
    text = (
        "# HELP a_total A.\n# TYPE a_total counter\n# TYPE h histogram\n"
        'h_bucket{le="1"} 0\n# TYPE g gauge\ng 1\n# TYPE c counter\nc_total 1\n'
    )
    assert exported_metric_names(text) == {
        "a_total",
        "h_bucket",
        "h_sum",
        "h_count",
        "g",
        "c",
        "c_total",
    }


def test_readme_values_table_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(VALUES_TABLE), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------- a vendor's extra consumer


def vendor_values(tmp_path: Path, **changes: Any) -> Path:
    """The template's snippet with `changes` on its one entry, written next to the test."""
    snippet = yaml.safe_load(consumer_snippet().read_text())
    (entry,) = snippet["extraConsumers"]
    entry.update(changes)
    path = tmp_path / "vendor.yaml"
    path.write_text(yaml.safe_dump(snippet))
    return path


def test_consumer_template_snippet_is_chart_values() -> None:
    # The snippet is an entry of extraConsumers, valid against the chart's schema as it is.
    text = consumer_snippet().read_text()
    assert "{{" not in text and "does not render" not in text
    snippet = yaml.safe_load(text)
    assert snippet.keys() == {"extraConsumers"}
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(merged_values("vendor-consumer"))
    (entry,) = snippet["extraConsumers"]
    assert entry["name"] == VENDOR and entry["module"] == VENDOR.replace("-", "_")
    # Its queue is its own, not one of Orgdir's (shared/orgdir/queues.py).
    queues, _ = service_topology()
    assert [c["queue"] for c in entry["consumers"]] == [f"{VENDOR}.events"]
    assert not {c["queue"] for c in entry["consumers"]} & set(queues)


def test_extra_consumer_runs_beside_the_services(helm: str) -> None:
    docs = render(helm, "vendor-consumer")
    full = f"{RELEASE}-{VENDOR}"
    labels = {
        "app.kubernetes.io/name": "orgdir",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": VENDOR,
    }
    for kind in (
        "Deployment",
        "Service",
        "ServiceAccount",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ):
        doc = by_name(docs, kind).get(full)
        assert doc is not None, f"no {kind} {full}"
        assert labels.items() <= doc["metadata"]["labels"].items(), kind
        assert doc["metadata"]["labels"]["municipality"] == "example", kind  # commonLabels
    deployment = by_name(docs, "Deployment")[full]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == full
    (container,) = pod["containers"]
    # Its own registry: not image.registry, which is Orgdir's.
    assert container["image"] == f"registry.example.org/{VENDOR}:0.1.0"
    assert container["args"][:2] == ["--factory", "vendor_ad.app:create_app"]
    assert [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s] == [
        f"{VENDOR}-secrets"
    ]
    assert by_name(docs, "Service")[full]["spec"]["selector"] == labels
    data = by_name(docs, "ConfigMap")[full]["data"]
    assert data["ORGDIR_SERVICE_NAME"] == VENDOR
    assert data["ORGDIR_EXCHANGE"] == "orgdir.events"
    budget = by_name(docs, "PodDisruptionBudget")[full]["spec"]
    assert budget["minAvailable"] == 1 and budget["selector"]["matchLabels"] == labels
    # No ingress path leads to it.
    backends = {
        path["backend"]["service"]["name"]
        for ingress in of_kind(docs, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends and full not in backends
    # Scraped and alerted on like a service.
    (monitor,) = of_kind(docs, "ServiceMonitor")
    service_labels = by_name(docs, "Service")[full]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    rules = {r["alert"]: r for r in prometheus_rules_of(docs)}
    jobs = re.search(r'job=~"([^"]+)"', rules["OrgdirTargetDown"]["expr"])
    assert jobs and full in jobs.group(1).split("|")


def prometheus_rules_of(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = of_kind(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_extra_consumer_network_policy(helm: str) -> None:
    docs = render(helm, "vendor-consumer")
    values = merged_values("vendor-consumer")
    np = values["networkPolicy"]
    policy = by_name(docs, "NetworkPolicy")[f"{RELEASE}-{VENDOR}"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == VENDOR
    # In: Prometheus only (/metrics); not the ingress controller, not the portal.
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": np["prometheus"]["namespaceSelector"],
            "podSelector": np["prometheus"]["podSelector"],
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    # Out: DNS, MongoDB and RabbitMQ as the services; not the identity provider (no API).
    ports = {port["port"] for egress in policy["egress"] for port in egress.get("ports", [])}
    assert ports == {*np["dns"]["ports"], *np["mongodb"]["ports"], *np["rabbitmq"]["ports"]}
    registry = by_name(docs, "NetworkPolicy")[f"{RELEASE}-registry"]["spec"]
    assert [e for e in registry["egress"] if {"port": 27017, "protocol": "TCP"} in e["ports"]] == [
        e for e in policy["egress"] if {"port": 27017, "protocol": "TCP"} in e["ports"]
    ]


def test_extra_consumer_egress_targets(helm: str, tmp_path: Path) -> None:
    target = {"cidrs": ["10.20.0.0/16"], "peers": [], "ports": [636]}
    path = vendor_values(tmp_path, egress=[target])
    docs = render(helm, "full", ("--values", str(path)))
    policy = by_name(docs, "NetworkPolicy")[f"{RELEASE}-{VENDOR}"]["spec"]
    assert {
        "ports": [{"protocol": "TCP", "port": 636}],
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    } in policy["egress"]
    # The services do not get the vendor's target.
    registry = by_name(docs, "NetworkPolicy")[f"{RELEASE}-registry"]["spec"]
    assert not [e for e in registry["egress"] if {"protocol": "TCP", "port": 636} in e["ports"]]


@pytest.mark.parametrize("keda", [True, False], ids=["keda", "hpa"])
def test_extra_consumer_autoscales_on_its_competing_queue(
    helm: str, tmp_path: Path, keda: bool
) -> None:
    consumers = [
        {"name": "events", "queue": f"{VENDOR}.events", "singleActiveConsumer": False, "targetQueueLength": 50},
        {"name": "ordered", "queue": f"{VENDOR}.ordered", "singleActiveConsumer": True},
    ]
    path = vendor_values(
        tmp_path, autoscaling={"enabled": True, "maxReplicas": 10}, consumers=consumers
    )
    extra = ("--values", str(path), "--set", f"keda.enabled={str(keda).lower()}")
    docs = render(helm, "full", extra)
    full = f"{RELEASE}-{VENDOR}"
    scaled = by_name(docs, "ScaledObject")
    hpa = by_name(docs, "HorizontalPodAutoscaler")
    assert "replicas" not in by_name(docs, "Deployment")[full]["spec"]
    mine = [doc for doc in docs if doc["metadata"]["name"] == full]
    problems = [p for doc in mine if doc["kind"] in CRD_KINDS for p in crd_problems(doc, docs, "full")]
    assert not problems, problems
    if not keda:
        assert full not in scaled and hpa[full]["spec"]["maxReplicas"] == 10
        return
    assert full not in hpa
    spec = scaled[full]["spec"]
    assert spec["scaleTargetRef"]["name"] == full
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)  # defaults + its own
    rabbit = [t for t in spec["triggers"] if t["type"] == "rabbitmq"]
    # Its competing queue, like the services' consumers; never the single-active one.
    assert [(t["name"], t["metadata"]["queueName"], t["metadata"]["value"]) for t in rabbit] == [
        ("events", f"{VENDOR}.events", "50")
    ]
    assert rabbit[0]["authenticationRef"]["name"] == "orgdir-rabbitmq"
    for doc in mine:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_extra_consumer_entry_takes_the_defaults(helm: str, tmp_path: Path) -> None:
    entry: dict[str, Any] = {
        "name": "payroll",
        "module": "payroll_sync",
        "image": {"repository": "vendor.example/payroll", "tag": "2.0"},
        "consumers": [{"name": "events", "queue": "payroll.events", "singleActiveConsumer": True}],
        "existingSecret": "payroll",
    }
    phones = {**entry, "name": "phones", "existingSecret": "phones"}
    phones["consumers"] = [{"name": "events", "queue": "phones.events", "singleActiveConsumer": True}]
    phones["podDisruptionBudget"] = {"enabled": False}  # false wins over the default's true
    phones["replicaCount"] = 3
    idle = {**entry, "name": "idle", "existingSecret": "idle", "enabled": False}
    idle["consumers"] = [{"name": "events", "queue": "idle.events", "singleActiveConsumer": True}]
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump({"extraConsumers": [entry, phones, idle]}))
    docs = render(helm, "default", ("--values", str(path)))
    defaults = merged_values("default")["extraConsumerDefaults"]
    deployment = by_name(docs, "Deployment")[f"{RELEASE}-payroll"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == defaults["replicaCount"] == 2
    assert container["resources"] == defaults["resources"]
    assert container["image"] == "vendor.example/payroll:2.0"
    assert container["ports"][0]["containerPort"] == defaults["containerPort"]
    assert {e["name"] for e in container["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]} == set(
        defaults["requiredSecretKeys"]
    )
    budgets = by_name(docs, "PodDisruptionBudget")
    assert budgets[f"{RELEASE}-payroll"]["spec"]["minAvailable"] == 1
    assert f"{RELEASE}-phones" not in budgets
    assert by_name(docs, "Deployment")[f"{RELEASE}-phones"]["spec"]["replicas"] == 3
    assert not [doc for doc in docs if doc["metadata"]["name"] == f"{RELEASE}-idle"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "registry"}, ["at '/extraConsumers/0/name'"]),
        ({"existingSecret": ""}, ["at '/extraConsumers/0/existingSecret'"]),
        ({"image": {"repository": "registry.example.org/x"}}, ["at '/extraConsumers/0/image'", "tag"]),
        (
            {"config": {"ORGDIR_SERVICE_NAME": "x"}},
            ["extraConsumers[0] (vendor-ad).config.ORGDIR_SERVICE_NAME: the chart sets it"],
        ),
        ({"ingress": {"prefixPaths": ["/ad"]}}, ["'ingress' not allowed"]),
        (
            {"config": {"ORGDIR_AD_PASSWORD": "x"}},
            ["extraConsumers[0] (vendor-ad).config.ORGDIR_AD_PASSWORD looks like a secret"],
        ),
        (
            {
                "consumers": [
                    {
                        "name": "registry",
                        "queue": "orgunits.registry",
                        "singleActiveConsumer": False,
                        "targetQueueLength": 1,
                    }
                ]
            },
            ["queue orgunits.registry must start with vendor-ad."],
        ),
        (
            {"replicaCount": 1},
            ["extraConsumers[0] (vendor-ad): podDisruptionBudget.minAvailable 1 with replicaCount 1"],
        ),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else None,
)
def test_wrong_extra_consumer_fails_with_a_clear_message(
    helm: str, tmp_path: Path, changes: dict[str, Any], expected: list[str]
) -> None:
    path = vendor_values(tmp_path, **changes)
    proc = run_helm(helm, *template_args("default", extra=["--values", str(path)]))
    assert proc.returncode != 0, f"helm template {changes} succeeded"
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in:\n{proc.stderr}"


def test_extra_consumer_names_are_unique(helm: str, tmp_path: Path) -> None:
    snippet = yaml.safe_load(consumer_snippet().read_text())
    snippet["extraConsumers"] *= 2
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(snippet))
    proc = run_helm(helm, *template_args("default", extra=["--values", str(path)]))
    assert proc.returncode != 0
    assert "extraConsumers[1] (vendor-ad): the name vendor-ad is already taken" in proc.stderr
