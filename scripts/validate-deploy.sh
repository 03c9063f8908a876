#!/usr/bin/env bash
# Validates deploy/ offline, as CI does: YAML syntax and style (yamllint), every Kubernetes
# object against the API schemas (kubernetes-validate --strict), the kustomization, the compose
# file and collector config's cross-references, the CKPT_ variable names against the server's
# configuration, and the image's Rust release against rust-toolchain.toml.
#
#   scripts/validate-deploy.sh
#
# The Python tools go into target/deploy-venv on the first run and are reused afterwards.
# Inputs (environment):
#   CKPT_KUBE_VERSIONS   Kubernetes releases to validate against (default "1.30.0 1.35.0": the
#                        oldest the manifests support and a current one)
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

VENV=target/deploy-venv
# Pinned so that a new release (new lint rules, new schemas) cannot fail CI on its own.
REQUIREMENTS=(yamllint==1.38.0 kubernetes-validate==1.37.0)
read -r -a KUBE_VERSIONS <<<"${CKPT_KUBE_VERSIONS:-1.30.0 1.35.0}"

# Creates the venv and installs REQUIREMENTS, unless the stamp says that was done already.
ensure_tools() {
    local stamp="$VENV/requirements.txt"
    if [[ -f $stamp && $(<"$stamp") == "${REQUIREMENTS[*]}" ]] &&
        "$VENV/bin/python" -c '' 2>/dev/null; then
        ckpt_note "reusing $VENV (${REQUIREMENTS[*]})"
        return
    fi
    command -v python3 >/dev/null || ckpt_apt_install python3 python3-venv
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        ckpt_apt_install python3-venv
    fi
    ckpt_note "creating $VENV with ${REQUIREMENTS[*]}"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2 || ckpt_die "python3 -m venv failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENTS[@]}" >&2 ||
        ckpt_die "pip install ${REQUIREMENTS[*]} failed"
    echo "${REQUIREMENTS[*]}" >"$stamp"
}

lint_yaml() {
    "$VENV/bin/yamllint" --list-files -c deploy/.yamllint.yaml deploy/ | sort | sed 's/^/    /' >&2
    "$VENV/bin/yamllint" --strict -c deploy/.yamllint.yaml deploy/
}

# The manifests kubectl applies: deploy/k8s/*.yaml less the kustomization itself.
k8s_manifests() {
    find deploy/k8s -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort
}

validate_k8s() {
    local manifests version
    mapfile -t manifests < <(k8s_manifests)
    for version in "${KUBE_VERSIONS[@]}"; do
        "$VENV/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}" >&2
    done
}

# kubectl is optional: where it exists, render the kustomization and validate the result too.
render_kustomization() {
    if ! command -v kubectl >/dev/null; then
        ckpt_note "kubectl not found: skipped rendering the kustomization"
        return
    fi
    local rendered="$VENV/k8s-rendered.yaml"
    kubectl kustomize deploy/k8s >"$rendered"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "${KUBE_VERSIONS[-1]}" "$rendered" >&2
    ckpt_note "kubectl kustomize deploy/k8s: $(grep -c '^kind:' "$rendered") objects, valid"
}

# `docker compose config` needs no engine, but the compose plugin is often absent (Debian's
# docker-compose package is the old 1.x, which reads a different format).
compose_config() {
    if ! docker compose version >/dev/null 2>&1; then
        ckpt_note "docker compose not found: skipped \`docker compose config\`"
        return
    fi
    docker compose -f deploy/compose.yaml config -q
    ckpt_note "docker compose -f deploy/compose.yaml config -q: ok"
}

toolchain_matches() {
    local pinned image
    pinned=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
    image=$(sed -n 's/^ARG RUST_VERSION=//p' deploy/Dockerfile)
    [[ -n $pinned && $pinned == "$image" ]] ||
        ckpt_die "deploy/Dockerfile builds with Rust '$image', rust-toolchain.toml pins '$pinned'"
    ckpt_note "deploy/Dockerfile and rust-toolchain.toml both use Rust $pinned"
}

# Checks what no schema knows: references between files and names the server must recognise.
cross_references() {
    "$VENV/bin/python" - <<'PY'
import glob
import os
import re
import sys

import yaml

problems = []


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


# Every manifest is listed in the kustomization, and every listed file exists.
listed = set(load("deploy/k8s/kustomization.yaml")["resources"])
present = {os.path.basename(p) for p in glob.glob("deploy/k8s/*.yaml")} - {"kustomization.yaml"}
for name in sorted(present - listed):
    problems.append(f"deploy/k8s/{name} is not listed in kustomization.yaml")
for name in sorted(listed - present):
    problems.append(f"kustomization.yaml lists {name}, which does not exist")

# Compose: dependencies name services, local files exist, host ports are distinct.
compose = load("deploy/compose.yaml")
services = compose["services"]
host_ports = {}
for name, service in services.items():
    if "image" not in service and "build" not in service:
        problems.append(f"compose service {name} has neither image nor build")
    for dependency in service.get("depends_on", {}):
        if dependency not in services:
            problems.append(f"compose service {name} depends on unknown service {dependency}")
    build = service.get("build")
    if build:
        context = os.path.normpath(os.path.join("deploy", build["context"]))
        dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            problems.append(f"compose service {name} builds from missing {dockerfile}")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith((".", "/")) and not os.path.exists(os.path.join("deploy", source)):
            problems.append(f"compose service {name} mounts missing {source}")
    for port in service.get("ports", []):
        host = str(port).split(":")[0]
        if host in host_ports:
            problems.append(f"host port {host} is taken by {host_ports[host]} and {name}")
        host_ports[host] = name

# Collector: every pipeline names components that are defined.
collector = load("deploy/otel-collector.yaml")
for pipeline, spec in collector["service"]["pipelines"].items():
    for kind in ("receivers", "processors", "exporters"):
        for component in spec.get(kind, []):
            if component not in collector.get(kind, {}):
                problems.append(f"collector pipeline {pipeline} uses undefined {kind[:-1]} {component}")

# CKPT_ variables: only names the server reads.
known = set()
for path in glob.glob("server/src/**/*.rs", recursive=True):
    with open(path) as f:
        known |= set(re.findall(r'env = "(CKPT_[A-Z0-9_]+)"', f.read()))
used = {}
for path in ["deploy/compose.yaml", *glob.glob("deploy/k8s/*.yaml")]:
    with open(path) as f:
        for variable in re.findall(r"\b(CKPT_[A-Z0-9_]+)\s*:", f.read()):
            used.setdefault(variable, path)
for variable, path in sorted(used.items()):
    if variable not in known:
        problems.append(f"{path} sets {variable}, which the server does not read")

for problem in problems:
    print(f"error: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"    {len(present)} manifests listed, {len(services)} compose services, "
      f"{len(collector['service']['pipelines'])} collector pipelines, "
      f"{len(used)} CKPT_ variables known to the server", file=sys.stderr)
PY
}

ckpt_banner "deploy: tools"
ensure_tools

ckpt_banner "deploy: yamllint --strict"
lint_yaml

ckpt_banner "deploy: Kubernetes objects (kubernetes-validate --strict, ${KUBE_VERSIONS[*]})"
validate_k8s
render_kustomization

ckpt_banner "deploy: compose file and collector config"
compose_config
cross_references

ckpt_banner "deploy: container image"
toolchain_matches

ckpt_banner "deploy: all checks passed"
