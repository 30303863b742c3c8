"""Proof that the checks bite: each test breaks a copy of a manifest the way a careless edit
would, and the policy (or the schema validator) must report exactly that."""

# ruff: noqa: E501 - the tables of breakages read best one per line

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploykit import (
    ROOT,
    Rendered,
    check_all,
    check_compose,
    check_dockerfile,
    compose_config,
    copy_k8s_tree,
    env_file_from_example,
    render,
    tool,
)

# (what is dropped, file under deployments/k8s, regex, replacement, overlay, expected problem)
K8S_BREAKAGES = [
    ("readOnlyRootFilesystem", "base/gateway.yaml", r"readOnlyRootFilesystem: true",
     "readOnlyRootFilesystem: false", "dev", "gateway container gateway: readOnlyRootFilesystem"),
    ("runAsNonRoot", "base/users.yaml", r"runAsNonRoot: true", "runAsNonRoot: false",
     "staging", "users container users: runAsNonRoot"),
    ("capability drop", "base/chat.yaml", r"capabilities: \{drop: \[ALL\]\}",
     "capabilities: {drop: [NET_RAW]}", "production", "chat container chat: capabilities"),
    ("seccomp", "base/catalog.yaml", r"seccompProfile: \{type: RuntimeDefault\}",
     "seccompProfile: {type: Unconfined}", "dev", "catalog container catalog: no RuntimeDefault"),
    ("privilege escalation", "components/backing/postgres.yaml",
     r"allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "staging",
     "StatefulSet/postgres container postgres: allowPrivilegeEscalation"),
    ("restricted namespace label", "base/namespace.yaml",
     r"pod-security.kubernetes.io/enforce: restricted", "pod-security.kubernetes.io/enforce: baseline",
     "production", "enforce=restricted"),
    ("readiness probe", "base/analytics.yaml", r"readinessProbe:\n\s+httpGet: \{path: /health/ready, port: ops\}",
     "readinessProbe:\n            httpGet: {path: /health/live, port: ops}", "dev",
     "Deployment/analytics: readinessProbe"),
    ("liveness probe", "base/gateway.yaml", r"          livenessProbe:\n(?:            .*\n){4}", "",
     "production", "Deployment/gateway: livenessProbe"),
    ("startup probe", "base/users.yaml", r"          startupProbe:\n(?:            .*\n){4}", "",
     "dev", "Deployment/users: startupProbe"),
    ("memory limit", "base/migrate-job.yaml", r'limits: \{cpu: "1", memory: 256Mi\}', 'limits: {cpu: "1"}',
     "dev", "Job/migrate container migrate: no memory limits"),
    ("/tmp emptyDir", "base/chat.yaml", r"            - \{name: tmp, mountPath: /tmp\}\n", "",
     "staging", "Deployment/chat: /tmp is not an emptyDir"),
    ("grace period", "base/users.yaml", r"terminationGracePeriodSeconds: 35",
     "terminationGracePeriodSeconds: 20", "production", "terminationGracePeriodSeconds 20"),
    ("maxUnavailable 0", "base/gateway.yaml", r"maxUnavailable: 0, maxSurge: 1",
     "maxUnavailable: 1, maxSurge: 1", "staging", "Deployment/gateway: rolling update"),
    ("headless gRPC service", "base/catalog.yaml", r"  clusterIP: None\n", "", "dev",
     "Service/catalog: not headless"),
    ("default deny", "base/networkpolicies.yaml",
     r"metadata: \{name: default-deny-all\}\nspec:\n  podSelector: \{\}\n  policyTypes: \[Ingress, Egress\]",
     "metadata: {name: default-deny-all}\nspec:\n  podSelector: {matchLabels: {x: y}}\n"
     "  policyTypes: [Ingress, Egress]", "production", "no default-deny NetworkPolicy"),
    ("a flow outside the architecture", "base/networkpolicies.yaml",
     r"  egress:\n    - to:\n        - namespaceSelector:\n            matchLabels: \{kubernetes.io/metadata.name: kube-system\}",
     "  egress:\n    - {}\n    - to:\n        - namespaceSelector:\n            matchLabels: {kubernetes.io/metadata.name: kube-system}",
     "dev", "allows a flow the architecture lacks: ('analytics', '*', '*/*')"),
    ("an architecture flow", "components/backing/networkpolicies.yaml",
     r"values: \[analytics, chat\]\}\n      ports:\n        - \{protocol: TCP, port: 27017\}",
     "values: [analytics]}\n      ports:\n        - {protocol: TCP, port: 27017}", "staging",
     "blocks an architecture flow: ('chat', 'mongo', '27017/TCP')"),
    ("DNS", "base/networkpolicies.yaml", r"- \{protocol: UDP, port: 53\}", "- {protocol: UDP, port: 5353}",
     "dev", "kube-system/k8s-app=kube-dns', '53/UDP'"),
    ("a PodDisruptionBudget", "base/pdbs.yaml",
     r"---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: \{name: chat\}\n(?:.*\n){4}", "",
     "production", "no PodDisruptionBudget for chat"),
    ("HPAs in staging", "overlays/staging/kustomization.yaml", r"  - \.\./\.\./components/autoscaling\n", "",
     "staging", "staging: no HorizontalPodAutoscaler for gateway"),
    ("production minimum", "overlays/production/hpa.yaml", r"minReplicas: 3", "minReplicas: 1",
     "production", "HPA/gateway: replicas 1..20, need 3+"),
    ("image tag", "overlays/production/kustomization.yaml",
     r"name: registry.example.com/the-mesh/chat\n    newTag: [^\n]+", "name: registry.example.com/the-mesh/chat\n    newTag: latest",
     "production", "uses the latest tag"),
    ("a secret value", "base/secrets.env.example", r"MESH_USERS_PAGE_TOKEN_SECRET=\n",
     "MESH_USERS_PAGE_TOKEN_SECRET=0123456789abcdef0123456789abcdef\n", "dev",
     "MESH_USERS_PAGE_TOKEN_SECRET has a committed value"),
    ("a credential in a ConfigMap", "base/kustomization.yaml", r"- MESH_CHAT_URL=http://chat:8081",
     "- MESH_CHAT_URL=http://chat:8081\n      - MESH_REDIS_URL=redis://:hunter2hunter2@redis:6379/0",
     "dev", "MESH_REDIS_URL holds credentials"),
    ("TLS on the ingress", "overlays/staging/kustomization.yaml",
     r"      - \{op: replace, path: /spec/tls/0/hosts/0, value: api.staging.example.com\}\n", "",
     "staging", "not all covered by TLS"),
    ("the backing component in dev", "overlays/dev/kustomization.yaml", r"  - \.\./\.\./components/backing\n",
     "  []\n", "dev", "lacks the backing component"),
]  # fmt: skip


def _break(tree: Path, file: str, pattern: str, replacement: str) -> None:
    path = tree / file
    text = path.read_text()
    broken, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, f"the breakage pattern no longer matches {file}: update the test"
    path.write_text(broken)
    if file.endswith("secrets.env.example"):  # the tree's secrets.env is made from it
        shutil.copyfile(path, path.with_name("secrets.env"))


@pytest.mark.parametrize(
    ("file", "pattern", "replacement", "overlay", "expected"),
    [b[1:] for b in K8S_BREAKAGES],
    ids=[b[0] for b in K8S_BREAKAGES],
)
def test_a_dropped_kubernetes_policy_is_reported(
    tmp_path: Path, file: str, pattern: str, replacement: str, overlay: str, expected: str
) -> None:
    # (test_kubernetes.py proves the unbroken tree passes every check)
    tree = copy_k8s_tree(tmp_path)
    _break(tree, file, pattern, replacement)
    problems = check_all(Rendered(overlay, render(tree, overlay)))
    assert any(expected in p for p in problems), problems


def test_a_schema_error_is_reported_by_kubernetes_validate(tmp_path: Path) -> None:
    tree = copy_k8s_tree(tmp_path)
    _break(tree, "base/gateway.yaml", r"periodSeconds: 5\n", "periodSecond: 5\n")
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump_all(render(tree, "dev")))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.30.0", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr


COMPOSE_BREAKAGES = [
    ("a healthcheck", r"  redis:\n((?:    .*\n)*?)    healthcheck:\n(?:      .*\n){5}", r"  redis:\n\1",
     "redis: no healthcheck"),
    ("a published store", r"    shm_size: 256m\n", "    shm_size: 256m\n    ports: [\"5432:5432\"]\n",
     "postgres: publishes ports"),
    ("service_healthy", r"      users: \{condition: service_healthy\}\n      catalog:",
     "      users: {condition: service_started}\n      catalog:",
     "gateway: depends_on users with service_started"),
    ("the migration gate", r"migrate: \{condition: service_completed_successfully\}",
     "migrate: {condition: service_started}", "depends_on migrate with service_started"),
    ("resource limits", r"        limits: \{cpus: \"1\", memory: 512m\}\n        reservations: \{cpus: \"0.5\", memory: 256m\}\n\nnetworks",
     "        reservations: {cpus: \"0.5\", memory: 256m}\n\nnetworks", "gateway: no cpus and memory limits"),
    ("two chat replicas", r"replicas: 2", "replicas: 1", "chat: not two replicas"),
    ("the internal network", r"    internal: true\n", "", "not `internal: true`"),
    ("AOF", r"--appendonly yes", "--appendonly no", "redis: AOF is not on"),
    ("read-only root", r"  read_only: true\n", "  read_only: false\n", "root filesystem is not read-only"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "replacement", "expected"),
    [b[1:] for b in COMPOSE_BREAKAGES],
    ids=[b[0] for b in COMPOSE_BREAKAGES],
)
def test_a_dropped_compose_policy_is_reported(
    tmp_path: Path, pattern: str, replacement: str, expected: str
) -> None:
    env = env_file_from_example(ROOT / ".env.example", tmp_path / ".env")
    compose = tmp_path / "docker-compose.prod.yml"
    text = (ROOT / "docker-compose.prod.yml").read_text()
    broken, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, "the breakage pattern no longer matches: update the test"
    compose.write_text(broken)
    problems = check_compose(compose_config(ROOT, env, compose))
    assert any(expected in p for p in problems), problems


DOCKERFILE_BREAKAGES = [
    ("non-root user", r"USER 10001:10001\n", "", "gateway: does not run as uid 10001"),
    ("healthcheck", r"HEALTHCHECK --interval[^\n]*\\\n[^\n]*\n", "", "users: no HEALTHCHECK"),
    ("stop signal", r"STOPSIGNAL SIGTERM\n", "STOPSIGNAL SIGKILL\n", "chat: STOPSIGNAL is not SIGTERM"),
    ("no compilers", r"FROM runtime AS users\n",
     "FROM runtime AS users\nRUN apt-get update && apt-get install -y --no-install-recommends gcc\n",
     "users: a final stage installs a compiler"),
    ("OCI revision label", r'      org.opencontainers.image.revision="\$\{GIT_REVISION\}" \\\n', "",
     "no org.opencontainers.image.revision label"),
    ("the hashed lock", r"--require-hashes ", "", "not installed from the hashed lock"),
    ("slim base", r"-slim-", "-", "is not a pinned slim image"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "replacement", "expected"),
    [b[1:] for b in DOCKERFILE_BREAKAGES],
    ids=[b[0] for b in DOCKERFILE_BREAKAGES],
)
def test_a_dropped_image_rule_is_reported(pattern: str, replacement: str, expected: str) -> None:
    text = (ROOT / "deployments/docker/Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text()
    assert check_dockerfile(text, ignore) == []
    broken, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, "the breakage pattern no longer matches: update the test"
    problems = check_dockerfile(broken, ignore)
    assert any(expected in p for p in problems), problems
