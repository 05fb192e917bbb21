#!/usr/bin/env bash
# Prints a kustomize overlay rendered as a JSON array of Kubernetes objects, e.g.
#   scripts/render-k8s.sh production     (k8s/overlays/production; or a path to any kustomization)
# The container test reads the services' env, args, ports and probes from it. Offline; the first
# run installs the pinned tools (scripts/k8s-tools.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/k8s-tools.sh
. "$root/scripts/k8s-tools.sh"
[ $# -eq 1 ] || { echo "usage: $0 <overlay name | kustomization dir>" >&2; exit 2; }
dir=$1
[ -d "$dir" ] || dir=$root/k8s/overlays/$1
[ -f "$dir/kustomization.yaml" ] || { echo "no kustomization in $dir" >&2; exit 2; }
k8s_tools
k8s_render "$dir" | "$K8S_TOOLS/bin/python" -c '
import json, sys, yaml
json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout, indent=1)
print()'
