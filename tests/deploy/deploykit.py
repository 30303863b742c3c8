"""Rendering and policy checks over the deployment artefacts, shared by tests/deploy.

Every check returns a list of violations (empty: the policy holds), so that a test can
assert both that the committed files pass and that a deliberately broken copy is caught.

The tree checked is the repository, or the copy named by MESH_DEPLOY_ROOT (that is how
`deployments/validate.sh` is run against a broken copy in test_validate_script.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.topology import BY_NAME, PROCESSES

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("MESH_DEPLOY_ROOT") or REPO).resolve()
OVERLAYS = ("dev", "staging", "production")
PROCESS_NAMES = tuple(p.name for p in PROCESSES)
GRPC_PROCESSES = tuple(p.name for p in PROCESSES if p.kind == "grpc")
STORES = ("postgres", "mongo", "redis", "jaeger")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|SIGNING_KEY|PRIVATE|_DSN$|_URL$|CREDENTIAL)")
ENV_SECRET = re.compile(r"(PASSWORD|SECRET|SIGNING_KEYS|TOKEN)")  # the secrets of .env
URL_CREDENTIALS = re.compile(r"://[^/\s:@]*:[^/\s@]+@")

Obj = dict[str, Any]


# --- tools -------------------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of a validator: the virtualenv's first (pip-installed), then PATH.

    Missing, the test is skipped, unless MESH_DEPLOY_REQUIRE_TOOLS=1 (set by `make
    validate`, which installs them first): then a missing tool fails the run.
    """
    venv = Path(sys.executable).with_name(name)
    found = str(venv) if venv.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (make validate installs it)"
    if os.environ.get("MESH_DEPLOY_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run(args: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=None if env is None else {**os.environ, **env},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RenderError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


class RenderError(RuntimeError):
    """A tool refused the input."""


# --- Kubernetes ----------------------------------------------------------------------------


def copy_k8s_tree(destination: Path, source: Path | None = None) -> Path:
    """A copy of deployments/k8s whose secretGenerator inputs are the committed examples."""
    source = source or ROOT / "deployments" / "k8s"
    tree = destination / "k8s"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns("secrets.env"))
    for example in tree.rglob("secrets.env.example"):
        shutil.copyfile(example, example.with_name("secrets.env"))
    return tree


def render(tree: Path, overlay: str) -> list[Obj]:
    text = run([tool("kubectl"), "kustomize", str(tree / "overlays" / overlay)])
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass(frozen=True)
class Rendered:
    overlay: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def workloads(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in WORKLOAD_KINDS]

    @property
    def namespace(self) -> str:
        return str(self.of_kind("Namespace")[0]["metadata"]["name"])

    def config(self) -> dict[str, str]:
        """The data of the generated mesh-config ConfigMap."""
        for cm in self.of_kind("ConfigMap"):
            if cm["metadata"]["name"].startswith("mesh-config"):
                return dict(cm.get("data", {}))
        return {}


def pod_spec(workload: Obj) -> Obj:
    template = workload["spec"]["template"]
    if workload["kind"] == "CronJob":
        template = workload["spec"]["jobTemplate"]["spec"]["template"]
    return template["spec"]  # type: ignore[no-any-return]


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels", {}))


def containers(spec: Obj) -> list[Obj]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag (means latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image} uses the latest tag"
    return None


def check_restricted(r: Rendered) -> list[str]:
    """Pod Security `restricted`, plus readOnlyRootFilesystem, on every workload."""
    problems = []
    namespaces = r.of_kind("Namespace")
    if len(namespaces) != 1:
        problems.append(f"expected one Namespace, found {len(namespaces)}")
    else:
        labels = namespaces[0]["metadata"].get("labels", {})
        for mode in ("enforce", "audit", "warn"):
            if labels.get(f"pod-security.kubernetes.io/{mode}") != "restricted":
                problems.append(f"namespace lacks pod-security.kubernetes.io/{mode}=restricted")
    for w in r.workloads():
        where = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{where}: {flag}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUME_TYPES:
                problems.append(f"{where}: volume {volume['name']} of type {kinds}")
        for c in containers(spec):
            cwhere = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{cwhere}: privileged")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                problems.append(f"{cwhere}: capabilities do not drop ALL")
            if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                problems.append(f"{cwhere}: adds capabilities {caps['add']}")
            # PSA: neither level may say false, and one of them must say true.
            non_root = (sc.get("runAsNonRoot"), pod_sc.get("runAsNonRoot"))
            if False in non_root or True not in non_root:
                problems.append(f"{cwhere}: runAsNonRoot is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                problems.append(f"{cwhere}: runs as uid 0")
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{cwhere}: no RuntimeDefault seccompProfile")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: readOnlyRootFilesystem is not true")
            for port in c.get("ports", []):
                if "hostPort" in port:
                    problems.append(f"{cwhere}: hostPort {port['hostPort']}")
    return problems


def check_resources_and_images(r: Rendered) -> list[str]:
    problems = []
    for w in r.workloads():
        for c in containers(pod_spec(w)):
            where = f"{w['kind']}/{w['metadata']['name']} container {c['name']}"
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        problems.append(f"{where}: no {resource} {kind}")
            problem = image_problem(str(c.get("image", "")))
            if problem:
                problems.append(f"{where}: {problem}")
    return problems


def _port_number(container: Obj, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    return None


def check_processes(r: Rendered) -> list[str]:
    """The five Deployments: ports, probes, /tmp, graceful stop, rollout, spread."""
    problems = []
    config = r.config()
    if config.get("MESH_HOST") != "0.0.0.0":
        problems.append("mesh-config: MESH_HOST is not 0.0.0.0 (processes would bind loopback)")
    if config.get("MESH_GATEWAY_WORKERS") != "1":
        problems.append("mesh-config: MESH_GATEWAY_WORKERS is not 1")
    grace = float(config.get("MESH_SHUTDOWN_GRACE_SECONDS", "5"))
    for name in PROCESS_NAMES:
        spec_ = BY_NAME[name]
        d = r.get("Deployment", name)
        if d is None:
            problems.append(f"no Deployment {name}")
            continue
        spec = pod_spec(d)
        c = next((c for c in spec["containers"] if c["name"] == name), None)
        if c is None:
            problems.append(f"Deployment/{name}: no container named {name}")
            continue
        ports = {int(p["containerPort"]) for p in c.get("ports", [])}
        if ports != {spec_.port, spec_.ops_port}:
            problems.append(f"Deployment/{name}: ports {ports} != {spec_.port}, {spec_.ops_port}")
        for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
            http = c.get(probe, {}).get("httpGet", {})
            if http.get("path") != path or _port_number(c, http.get("port", 0)) != spec_.ops_port:
                problems.append(f"Deployment/{name}: {probe} is not GET {path} on the ops port")
        startup = c.get("startupProbe", {})
        grpc_ok = name in GRPC_PROCESSES and startup.get("grpc", {}).get("port") == spec_.port
        http = startup.get("httpGet", {})
        http_ok = http.get("path") == "/health/startup" and (
            _port_number(c, http.get("port", 0)) == spec_.ops_port
        )
        if not (grpc_ok or http_ok):
            problems.append(f"Deployment/{name}: startupProbe is not ops /health/startup or gRPC")
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        if not any(
            m["mountPath"] == "/tmp" and m["name"] in tmp_volumes
            for m in c.get("volumeMounts") or []
        ):
            problems.append(f"Deployment/{name}: /tmp is not an emptyDir")
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        period = spec.get("terminationGracePeriodSeconds", 30)
        if not period > grace + pre_stop:
            problems.append(
                f"Deployment/{name}: terminationGracePeriodSeconds {period} is not above the"
                f" process's grace {grace} s + preStop {pre_stop} s"
            )
        strategy = d["spec"].get("strategy", {})
        if strategy.get("type", "RollingUpdate") != "RollingUpdate" or strategy.get(
            "rollingUpdate", {}
        ).get("maxUnavailable") not in (0, "0%"):
            problems.append(f"Deployment/{name}: rolling update without maxUnavailable: 0")
        keys = {t.get("topologyKey") for t in spec.get("topologySpreadConstraints", [])}
        anti = spec.get("affinity", {}).get("podAntiAffinity")
        if "kubernetes.io/hostname" not in keys and not anti:
            problems.append(f"Deployment/{name}: not spread across nodes")
    return problems


def check_references(r: Rendered) -> list[str]:
    """Every referenced ConfigMap/Secret key exists; Services select pods and name ports."""
    problems = []
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in r.of_kind("Secret")}
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in r.of_kind("ConfigMap")}
    for w in r.workloads():
        spec = pod_spec(w)
        for c in containers(spec):
            where = f"{w['kind']}/{w['metadata']['name']}"
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                for kind, store in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
                    if kind in ref and ref[kind]["key"] not in store.get(ref[kind]["name"], {}):
                        problems.append(f"{where}: {kind} {ref[kind]} does not exist")
            for source in c.get("envFrom", []):
                if "configMapRef" in source and source["configMapRef"]["name"] not in configmaps:
                    problems.append(f"{where}: envFrom {source['configMapRef']} does not exist")
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                problems.append(f"{where}: volume configMap {volume['configMap']} missing")
    templates = [pod_labels(w) for w in r.workloads()]
    for svc in r.of_kind("Service"):
        selector = svc["spec"].get("selector", {})
        if not any(selector.items() <= labels.items() for labels in templates):
            problems.append(f"Service/{svc['metadata']['name']}: selects no pod")
    for name in GRPC_PROCESSES:
        svc = r.get("Service", name)
        if svc is None or svc["spec"].get("clusterIP") != "None":
            problems.append(f"Service/{name}: not headless (gRPC balances per pod)")
    for name in ("gateway", "chat"):
        if r.get("Service", name) is None:
            problems.append(f"no Service {name}")
    return problems


def check_pdbs(r: Rendered) -> list[str]:
    problems = []
    pdbs = r.of_kind("PodDisruptionBudget")
    for name in PROCESS_NAMES:
        matching = [
            p for p in pdbs
            if p["spec"].get("selector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            == name
        ]  # fmt: skip
        if not matching:
            problems.append(f"no PodDisruptionBudget for {name}")
            continue
        spec = matching[0]["spec"]
        if "maxUnavailable" not in spec and "minAvailable" not in spec:
            problems.append(f"PodDisruptionBudget for {name} sets no budget")
        if spec.get("maxUnavailable") in (0, "0%"):
            problems.append(f"PodDisruptionBudget for {name} blocks every drain")
    return problems


def hpas(r: Rendered) -> dict[str, Obj]:
    return {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in r.of_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }


def check_scaling(r: Rendered) -> list[str]:
    """dev: one replica, no HPA. staging: HPAs from 2. production: HPAs from 3."""
    problems = []
    minimum = {"dev": 1, "staging": 2, "production": 3}[r.overlay]
    by_target = hpas(r)
    for name in PROCESS_NAMES:
        d = r.get("Deployment", name)
        if d is None:
            continue
        hpa = by_target.get(name)
        if r.overlay == "dev":
            if d["spec"].get("replicas", 1) != 1:
                problems.append(f"dev Deployment/{name}: replicas {d['spec'].get('replicas')}")
            continue
        if hpa is None:
            problems.append(f"{r.overlay}: no HorizontalPodAutoscaler for {name}")
            continue
        if hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"{r.overlay} HPA/{name}: not autoscaling/v2")
        low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        if low < minimum or high <= low:
            problems.append(f"{r.overlay} HPA/{name}: replicas {low}..{high}, need {minimum}+")
        metrics = hpa["spec"].get("metrics", [])
        if not any(m.get("resource", {}).get("name") == "cpu" for m in metrics):
            problems.append(f"{r.overlay} HPA/{name}: no CPU metric")
        if name in ("gateway", "chat") and not any(m["type"] == "Pods" for m in metrics):
            problems.append(f"{r.overlay} HPA/{name}: no custom (Pods) metric")
        if "replicas" in d["spec"]:
            problems.append(f"{r.overlay} Deployment/{name}: sets replicas although an HPA owns it")
    return problems


def check_secrets(r: Rendered) -> list[str]:
    """No secret value in the rendered output (rendered from the committed examples)."""
    problems = []
    for s in r.of_kind("Secret"):
        name = s["metadata"]["name"]
        if not re.search(r"-[a-z0-9]{10}$", name):
            problems.append(f"Secret/{name} is not from a secretGenerator")
        for key, value in {**s.get("data", {}), **s.get("stringData", {})}.items():
            if value:
                problems.append(f"Secret/{name}: {key} has a committed value")
    for cm in r.of_kind("ConfigMap"):
        for key, value in cm.get("data", {}).items():
            if URL_CREDENTIALS.search(str(value)):
                problems.append(f"ConfigMap/{cm['metadata']['name']}: {key} holds credentials")
            if SECRET_NAME.search(key) and not key.endswith(("_ADDR", "_URL")):
                problems.append(f"ConfigMap/{cm['metadata']['name']}: secret-like key {key}")
    for w in r.workloads():
        for c in containers(pod_spec(w)):
            for env in c.get("env", []):
                value = env.get("value")
                if value is None:
                    continue
                if SECRET_NAME.search(env["name"]) or URL_CREDENTIALS.search(str(value)):
                    problems.append(
                        f"{w['kind']}/{w['metadata']['name']}: {env['name']} has a literal value"
                    )
    return problems


def check_ingress(r: Rendered) -> list[str]:
    problems = []
    ingresses = r.of_kind("Ingress")
    if len(ingresses) != 1:
        return [f"expected one Ingress, found {len(ingresses)}"]
    spec = ingresses[0]["spec"]
    hosts = {rule.get("host") for rule in spec.get("rules", [])}
    tls_hosts = {h for t in spec.get("tls", []) for h in t.get("hosts", [])}
    if not hosts or not hosts <= tls_hosts or not all(t.get("secretName") for t in spec["tls"]):
        problems.append(f"Ingress: hosts {hosts} not all covered by TLS {tls_hosts}")
    others = [o for o in OVERLAYS if o not in (r.overlay, "production")]
    for host in hosts:
        if (
            not host
            or any(o in host for o in others)
            or (r.overlay != "production" and r.overlay not in host)
        ):
            problems.append(f"Ingress: {r.overlay} serves the host name {host!r}")
    backends = {
        p["backend"]["service"]["name"]
        for rule in spec.get("rules", [])
        for p in rule["http"]["paths"]
    }
    if backends != {"gateway"}:
        problems.append(f"Ingress: backends {backends}, expected the gateway only")
    annotations = ingresses[0]["metadata"].get("annotations", {})
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        if int(annotations.get(f"nginx.ingress.kubernetes.io/{key}", "60")) < 3600:
            problems.append(f"Ingress: {key} below 3600 s cuts idle WebSockets")
    return problems


def check_overlay_settings(r: Rendered) -> list[str]:
    problems = []
    config = r.config()
    if config.get("MESH_ENV") != r.overlay:
        problems.append(f"mesh-config: MESH_ENV is {config.get('MESH_ENV')!r}")
    ratio = float(config.get("OTEL_TRACES_SAMPLER_ARG", "1"))
    if r.overlay == "production" and ratio > 0.1:
        problems.append(f"production samples {ratio} of the traces")
    if r.overlay == "production" and config.get("MESH_LOG_LEVEL") == "debug":
        problems.append("production logs at debug")
    names = {w["metadata"]["name"] for w in r.workloads()}
    in_cluster = set(STORES) & names
    if r.overlay == "production" and in_cluster:
        problems.append(f"production runs {in_cluster} in the cluster (managed endpoints)")
    if r.overlay != "production" and in_cluster != set(STORES):
        problems.append(f"{r.overlay} lacks the backing component: has {in_cluster}")
    jobs = [
        j for j in r.of_kind("Job")
        if any("migrate" in " ".join([c.get("image", ""), *c.get("command", []),
                                      *c.get("args", [])])
               for c in pod_spec(j)["containers"])
    ]  # fmt: skip
    if not jobs:
        problems.append("no migration Job")
    return problems


# --- NetworkPolicy evaluation ---------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str  # the workload's name
    labels: Mapping[str, str]
    ports: frozenset[tuple[int, str]]  # (port, protocol)


def _selects(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _selector_text(selector: Obj | None) -> str:
    if not selector:
        return "*"
    parts = [f"{k}={v}" for k, v in sorted(selector.get("matchLabels", {}).items())]
    parts += [
        f"{e['key']} {e['operator']} {','.join(e.get('values', []))}"
        for e in selector.get("matchExpressions", [])
    ]
    return ";".join(parts) or "*"


def _external_peer(peer: Obj) -> str:
    if "ipBlock" in peer:
        return "ipBlock"
    ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
    ns_name = ns.get("kubernetes.io/metadata.name", _selector_text(peer.get("namespaceSelector")))
    return f"{ns_name}/{_selector_text(peer.get('podSelector'))}"


def _rule_ports(rule: Obj) -> list[tuple[int | str, int | None, str]]:
    return [
        (p.get("port", "*"), p.get("endPort"), p.get("protocol", "TCP"))
        for p in rule.get("ports", [])
    ] or [("*", None, "*")]


def _port_matches(rule: Obj, port: int, protocol: str, pod: Pod | None = None) -> bool:
    for number, end, proto in _rule_ports(rule):
        if proto not in ("*", protocol):
            continue
        if number == "*":
            return True
        if isinstance(number, str):  # a named port of the destination pod
            continue
        if number == port or (end is not None and number <= port <= end):
            return True
    return False


def pods(r: Rendered) -> list[Pod]:
    found = []
    for w in r.workloads():
        ports = frozenset(
            (int(p["containerPort"]), p.get("protocol", "TCP"))
            for c in pod_spec(w)["containers"]
            for p in c.get("ports", [])
        )
        found.append(Pod(w["metadata"]["name"], pod_labels(w), ports))
    return found


def _in_namespace(peer: Obj, namespace: str) -> bool:
    ns = peer.get("namespaceSelector")
    if ns is None:
        return "ipBlock" not in peer
    return _selects(ns, {"kubernetes.io/metadata.name": namespace})


def flows(r: Rendered) -> set[tuple[str, str, str]]:
    """Every allowed connection, as (from, to, port/protocol).

    Pods are named by their workload; peers outside the namespace as `ns/selector` or
    `ipBlock`. A pod that no policy isolates shows up as `*` (anything) on that side.
    """
    policies = r.of_kind("NetworkPolicy")
    namespace = r.namespace
    all_pods = pods(r)

    def policies_for(pod: Pod, kind: str) -> list[Obj]:
        return [
            p for p in policies
            if kind in p["spec"].get("policyTypes", ["Ingress"])
            and _selects(p["spec"]["podSelector"], pod.labels)
        ]  # fmt: skip

    result: set[tuple[str, str, str]] = set()
    for src in all_pods:
        egress = policies_for(src, "Egress")
        if not egress:
            result.add((src.name, "*", "*"))
        for policy in egress:
            for rule in policy["spec"].get("egress", []):
                peers = rule.get("to", [])
                if not peers:
                    for number, end, proto in _rule_ports(rule):
                        span = f"{number}-{end}" if end else f"{number}"
                        result.add((src.name, "*", f"{span}/{proto}"))
                for peer in peers:
                    if _in_namespace(peer, namespace):
                        continue  # in-namespace flows: both sides checked below
                    for number, end, proto in _rule_ports(rule):
                        span = f"{number}-{end}" if end else f"{number}"
                        result.add((src.name, _external_peer(peer), f"{span}/{proto}"))
    for dst in all_pods:
        ingress = policies_for(dst, "Ingress")
        if not ingress:
            result.add(("*", dst.name, "*"))
        for policy in ingress:
            for rule in policy["spec"].get("ingress", []):
                peers = rule.get("from", [])
                for port, proto in dst.ports:
                    if not _port_matches(rule, port, proto, dst):
                        continue
                    if not peers:
                        result.add(("*", dst.name, f"{port}/{proto}"))
                    for peer in peers:
                        if not _in_namespace(peer, namespace):
                            result.add((_external_peer(peer), dst.name, f"{port}/{proto}"))

    def allowed(src: Pod, dst: Pod, port: int, proto: str) -> bool:
        def side(pol: list[Obj], key: str, direction: str, other: Pod) -> bool:
            if not pol:
                return True
            return any(
                _port_matches(rule, port, proto, dst)
                and (
                    not rule.get(key)
                    or any(
                        _in_namespace(peer, namespace)
                        and (
                            "podSelector" not in peer or _selects(peer["podSelector"], other.labels)
                        )
                        for peer in rule.get(key, [])
                    )
                )
                for p in pol
                for rule in p["spec"].get(direction, [])
            )

        return side(policies_for(src, "Egress"), "to", "egress", dst) and side(
            policies_for(dst, "Ingress"), "from", "ingress", src
        )

    for src in all_pods:
        for dst in all_pods:
            if src is dst:
                continue
            for port, proto in dst.ports:
                if allowed(src, dst, port, proto):
                    result.add((src.name, dst.name, f"{port}/{proto}"))
    return result


def expected_flows(r: Rendered) -> set[tuple[str, str, str]]:
    """The architecture (DESIGN.md section 1) as network flows, plus DNS and metrics."""
    p = BY_NAME
    workloads = [w["metadata"]["name"] for w in r.workloads()]
    expected = {
        ("gateway", "users", f"{p['users'].port}/TCP"),
        ("gateway", "catalog", f"{p['catalog'].port}/TCP"),
        ("gateway", "analytics", f"{p['analytics'].port}/TCP"),
        ("gateway", "chat", f"{p['chat'].port}/TCP"),
        # every service verifies tokens against the users service's JWK Set
        ("catalog", "users", f"{p['users'].port}/TCP"),
        ("analytics", "users", f"{p['users'].port}/TCP"),
        ("chat", "users", f"{p['users'].port}/TCP"),
        ("ingress-nginx/app.kubernetes.io/name=ingress-nginx", "gateway", "8080/TCP"),
    }
    for name in PROCESS_NAMES:
        expected.add(
            ("monitoring/app.kubernetes.io/name=prometheus", name, f"{p[name].ops_port}/TCP")
        )
    for name in workloads:
        for proto in ("UDP", "TCP"):
            expected.add((name, "kube-system/k8s-app=kube-dns", f"53/{proto}"))
    stores = {
        "postgres": ("5432", ("users", "catalog", "migrate")),
        "mongo": ("27017", ("analytics", "chat")),
        "redis": ("6379", PROCESS_NAMES),
    }
    for store, (port, users) in stores.items():
        for user in users:
            target = "ipBlock" if r.overlay == "production" else store
            expected.add((user, target, f"{port}/TCP"))
    collector = (
        "observability/app.kubernetes.io/name=otel-collector"
        if r.overlay == "production"
        else "jaeger"
    )
    for name in PROCESS_NAMES:
        expected.add((name, collector, "4317/TCP"))
    return expected


def check_network_policies(r: Rendered) -> list[str]:
    problems = []
    default_deny = [
        p for p in r.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"] in ({}, None)
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]  # fmt: skip
    if not default_deny:
        problems.append("no default-deny NetworkPolicy (all pods, Ingress and Egress, no rule)")
    actual, expected = flows(r), expected_flows(r)
    for flow in sorted(actual - expected):
        problems.append(f"NetworkPolicy allows a flow the architecture lacks: {flow}")
    for flow in sorted(expected - actual):
        problems.append(f"NetworkPolicy blocks an architecture flow: {flow}")
    return problems


K8S_CHECKS = (
    check_restricted,
    check_resources_and_images,
    check_processes,
    check_references,
    check_pdbs,
    check_scaling,
    check_secrets,
    check_ingress,
    check_overlay_settings,
    check_network_policies,
)


def check_all(r: Rendered) -> list[str]:
    return [problem for check in K8S_CHECKS for problem in check(r)]


# --- docker-compose --------------------------------------------------------------------------

COMPOSE_SERVICES = {
    "postgres", "mongo", "redis", "jaeger", "prometheus", "grafana", "migrate",
    *PROCESS_NAMES,
}  # fmt: skip
PUBLISHERS = {"gateway", "grafana", "jaeger"}


def env_file_from_example(example: Path, destination: Path) -> Path:
    """The .env template with throwaway values for the secrets it leaves empty."""
    lines = []
    for line in example.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and not value and ENV_SECRET.search(key):
            value = "throwaway0123456789abcdef0123456789"
        lines.append(f"{key}{sep}{value}" if sep else line)
    destination.write_text("\n".join(lines) + "\n")
    return destination


def compose_config(root: Path, env_file: Path, compose_file: Path | None = None) -> Obj:
    text = run(
        [
            tool("docker-compose"), "--project-directory", str(root), "--env-file", str(env_file),
            "-f", str(compose_file or root / "docker-compose.prod.yml"), "config",
        ]
    )  # fmt: skip
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def _duration_seconds(text: str | int | float) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(ms|us|s|m|h)", text):
        total += float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def _mounts(svc: Obj) -> list[tuple[str, str, str]]:
    """(type, source, target) of a service's volumes, from the long or the short syntax."""
    found = []
    for m in svc.get("volumes", []):
        if isinstance(m, dict):
            found.append((str(m.get("type")), str(m.get("source", "")), str(m.get("target"))))
            continue
        source, _, rest = str(m).partition(":")
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        found.append((kind, source, rest.split(":")[0]))
    return found


def _published_targets(svc: Obj) -> list[int]:
    """The container ports a service publishes (long or short syntax)."""
    targets = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            targets.append(int(port["target"]))
        else:
            targets.append(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return targets


def check_compose(config: Obj) -> list[str]:
    problems = []
    services: dict[str, Obj] = config.get("services", {})
    if set(services) != COMPOSE_SERVICES:
        problems.append(f"services {sorted(services)} != {sorted(COMPOSE_SERVICES)}")
    networks = config.get("networks", {})
    if set(networks) != {"edge", "internal"}:
        problems.append(f"networks {sorted(networks)} != edge, internal")
    elif not networks["internal"].get("internal"):
        problems.append("the internal network is not `internal: true`")
    volumes = set(config.get("volumes", {}))
    for name, svc in services.items():
        one_shot = name == "migrate"
        health = svc.get("healthcheck", {})
        if not one_shot and (not health.get("test") or health.get("disable")):
            problems.append(f"{name}: no healthcheck")
        restart = svc.get("restart", "no")
        if one_shot and restart not in ("no", "on-failure"):
            problems.append(f"{name}: a one-shot job restarts ({restart})")
        if not one_shot and restart not in ("always", "unless-stopped"):
            problems.append(f"{name}: restart policy {restart!r}")
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        if "memory" not in limits or "cpus" not in limits:
            problems.append(f"{name}: no cpus and memory limits")
        problem = image_problem(str(svc.get("image", "")))
        if problem:
            problems.append(f"{name}: {problem}")
        if svc.get("ports") and name not in PUBLISHERS:
            problems.append(f"{name}: publishes ports (only {sorted(PUBLISHERS)} may)")
        for dep, cond in (svc.get("depends_on") or {}).items():
            condition = cond.get("condition") if isinstance(cond, dict) else None
            wanted = {
                "migrate": {"service_completed_successfully"},
                # tracing is best effort: a process never waits for it (Grafana may)
                "jaeger": {"service_started", "service_healthy"},
            }.get(dep, {"service_healthy"})
            if condition not in wanted:
                problems.append(f"{name}: depends_on {dep} with {condition}, not {wanted}")
        for kind, source, _ in _mounts(svc):
            if kind == "volume" and source not in volumes:
                problems.append(f"{name}: volume {source} is not a named volume")
        svc_networks = set(svc.get("networks") or {})
        if not svc_networks <= {"edge", "internal"} or not svc_networks:
            problems.append(f"{name}: networks {svc_networks}")
        if "edge" in svc_networks and name not in PUBLISHERS:
            problems.append(f"{name}: on the edge network")
    for target in _published_targets(services.get("jaeger", {})):
        if target != 16686:
            problems.append(f"jaeger publishes {target}; only the UI (16686) may be")
    for name in (*PROCESS_NAMES, "migrate"):
        svc = services.get(name, {})
        if not svc:
            continue
        if not svc.get("read_only"):
            problems.append(f"{name}: root filesystem is not read-only")
        if not any(str(t).startswith("/tmp") for t in svc.get("tmpfs", [])):
            problems.append(f"{name}: no tmpfs on /tmp")
        if str(svc.get("user", "")).split(":")[0] != "10001":
            problems.append(f"{name}: not running as uid 10001")
        if "ALL" not in svc.get("cap_drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if name == "migrate":
            continue
        env = svc.get("environment", {})
        if env.get("MESH_HOST") != "0.0.0.0":
            problems.append(f"{name}: MESH_HOST is not 0.0.0.0")
        grace = float(env.get("MESH_SHUTDOWN_GRACE_SECONDS", 5))
        if _duration_seconds(svc.get("stop_grace_period", "10s")) <= grace:
            problems.append(f"{name}: stop_grace_period not above the process's grace {grace}")
    chat = services.get("chat", {})
    if chat.get("deploy", {}).get("replicas") != 2 or "container_name" in chat:
        problems.append("chat: not two replicas")
    for name, needle in (
        ("postgres", "postgres:16"), ("mongo", "mongo:7"), ("redis", "redis:7"),
        ("jaeger", "jaegertracing/all-in-one:"), ("prometheus", "prom/prometheus:"),
        ("grafana", "grafana/grafana:"),
    ):  # fmt: skip
        if not str(services.get(name, {}).get("image", "")).startswith(needle):
            problems.append(f"{name}: image is not {needle}*")
    redis_cmd = " ".join(map(str, services.get("redis", {}).get("command", [])))
    if "--appendonly yes" not in redis_cmd:
        problems.append("redis: AOF is not on")
    binds = {
        name: " ".join(f"{source}:{target}" for _, source, target in _mounts(svc))
        for name, svc in services.items()
    }
    for name, path in (
        ("prometheus", "deployments/prometheus"),
        ("grafana", "deployments/grafana/provisioning"),
        ("grafana", "deployments/grafana/dashboards"),
        ("postgres", "deployments/docker/postgres/initdb"),
    ):
        if path not in binds.get(name, ""):
            problems.append(f"{name}: does not mount {path}")
    for name in ("postgres", "mongo", "redis", "prometheus", "grafana"):
        svc = services.get(name, {})
        if not any(kind == "volume" for kind, _, _ in _mounts(svc)):
            problems.append(f"{name}: its data is not on a named volume")
    return problems


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, line
            stages.append(Stage(match.group(2) or str(len(stages)), match.group(1)))
        elif not stages:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cc|rustc|cargo)\b")


def _lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    by_name = {s.name: s for s in stages}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def check_dockerfile(text: str, dockerignore: str) -> list[str]:
    """The image contract of the issue, over deployments/docker/Dockerfile."""
    problems = []
    args, stages = parse_dockerfile(text)
    names = [s.name for s in stages]
    targets = {*PROCESS_NAMES, "migrate"}
    if not targets <= set(names):
        problems.append(f"targets {sorted(targets - set(names))} missing")
    external = [s for s in stages if s.base not in names]
    for s in external:
        base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), "?"), s.base)
        if "slim" not in base or image_problem(base):
            problems.append(f"stage {s.name}: base {base} is not a pinned slim image")
    if len(external) < 2:
        problems.append("not multi-stage (a builder and a separate runtime base)")
    for target in sorted(targets & set(names)):
        chain = _lineage(stages, next(s for s in stages if s.name == target))
        everything = [(kw, a) for s in reversed(chain) for kw, a in s.instructions]
        if any(kw == "RUN" and COMPILERS.search(a) for kw, a in everything):
            problems.append(f"{target}: a final stage installs a compiler")
        if any(kw == "RUN" and re.search(r"\bpip\b.*\binstall\b", a) for kw, a in everything):
            problems.append(f"{target}: pip install in a final stage (belongs in the builder)")
        users = [a for kw, a in everything if kw == "USER"]
        if not users or users[-1].split(":")[0] != "10001":
            problems.append(f"{target}: does not run as uid 10001")
        if [a for kw, a in everything if kw == "STOPSIGNAL"][-1:] != ["SIGTERM"]:
            problems.append(f"{target}: STOPSIGNAL is not SIGTERM")
        labels = " ".join(a for kw, a in everything if kw == "LABEL")
        for label in ("org.opencontainers.image.version", "org.opencontainers.image.revision"):
            if label not in labels:
                problems.append(f"{target}: no {label} label")
        health = [a for kw, a in everything if kw == "HEALTHCHECK"]
        cmds = [a for kw, a in everything if kw == "CMD"]
        cmd = cmds[-1] if cmds else ""
        if target == "migrate":
            if "migrate" not in cmd:
                problems.append("migrate: CMD does not run `mesh migrate`")
            continue
        if not health or health[-1] == "NONE" or "healthcheck" not in health[-1]:
            problems.append(f"{target}: no HEALTHCHECK on the ops port")
        envs = " ".join(a for kw, a in everything if kw == "ENV")
        if f"MESH_PROCESS={target}" not in envs:
            problems.append(f"{target}: MESH_PROCESS (the healthcheck's process) is not {target}")
        if f'"{BY_NAME[target].module}"' not in cmd:
            problems.append(f"{target}: CMD does not run python -m {BY_NAME[target].module}")
        exposed = {int(p) for a in [a for kw, a in everything if kw == "EXPOSE"] for p in a.split()}
        if exposed != {BY_NAME[target].port, BY_NAME[target].ops_port}:
            problems.append(f"{target}: EXPOSE {sorted(exposed)}")
    copied = " ".join(a for s in stages for kw, a in s.instructions if kw == "COPY")
    for package in ("mesh", "gateway", "services", "protos"):
        if f"{package}/" not in copied:
            problems.append(f"the {package} package is not copied into the image")
    pip_lines = [a for s in stages for kw, a in s.instructions if kw == "RUN" and "install" in a]
    locked = [a for a in pip_lines if "--require-hashes" in a and "requirements.lock" in a]
    if not locked:
        problems.append("dependencies are not installed from the hashed lock")
    if any(re.search(r"\.\[|\[embedded|\[dev", a) for a in pip_lines):
        problems.append("an extra (embedded/dev) is installed into the image")
    ignore = [line.strip() for line in dockerignore.splitlines() if line.strip()]
    patterns = [x for x in ignore if not x.startswith("#")]
    if not patterns or patterns[0] != "*":
        problems.append(".dockerignore is not an allow-list (starts with *)")
    allowed = {x[1:].rstrip("/") for x in ignore if x.startswith("!")}
    for s in stages:
        for kw, a in s.instructions:
            if kw == "COPY" and "--from" not in a:
                for source in a.split()[:-1]:
                    if source.startswith("--"):
                        continue
                    if source.rstrip("/") not in allowed:
                        problems.append(f"COPY {source}: excluded by .dockerignore")
    return problems


def iter_docs(path: Path) -> Iterator[Obj]:
    yield from (d for d in yaml.safe_load_all(path.read_text()) if d)
