#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (k8s/), run by scripts/test.sh:
#   1. yamllint on k8s/ (warnings fail);
#   2. every overlay in k8s/overlays rendered with kustomize (kubectl kustomize);
#   3. the objects of CRD kinds (CloudNativePG Cluster, Gateway API Gateway/HTTPRoute, KEDA
#      ScaledObject) against the vendored CRD schemas in k8s/schemas, strictly (unknown fields
#      fail; scripts/k8s-validate-crds.py); an object of a vendored group with no schema fails;
#   3b. every service's container lists the variables it needs to start, and every ConfigMap or
#      Secret key it references exists (scripts/k8s-check-env.py);
#   4. every other object with kubernetes-validate --strict against each of $K8S_VERSIONS
#      (its WARN lines, e.g. a kind it has no schema for, fail too);
#   5. checkov (framework kubernetes) on the rendered overlays: zero failed checks (skips are
#      checkov.io/skip<N> annotations with their reasons, next to the resource);
#   6. a self-check that the validation fails: copies of the production overlay with an unknown
#      field in a Deployment's container, with one in the CNPG Cluster, and without an env var.
# Tools are pinned and installed from PyPI into a venv outside the repository on first use
# (scripts/k8s-tools.sh); everything runs without network (unshare -n).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/k8s-tools.sh
. scripts/k8s-tools.sh
K8S_VERSIONS=${K8S_VERSIONS:-1.31.0 1.34.0}
start=$SECONDS
k8s_tools
k8s_checkov
T=$K8S_TOOLS/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# validate_overlay DIR OUT: steps 2-4 for one kustomization; the rendered YAML is left in OUT.
validate_overlay() {
  local dir=$1 out=$2 v log
  k8s_render "$dir" > "$out" || { echo "FAIL: kustomize could not render $dir" >&2; return 1; }
  unshare -n "$T/python" scripts/k8s-validate-crds.py k8s/schemas "$out" "$out.core" > "$out.crd.log" ||
    { grep -v '^ok ' "$out.crd.log" >&2; echo "FAIL: CRD objects of $dir do not match their schemas" >&2; return 1; }
  unshare -n "$T/python" scripts/k8s-check-env.py "$out" > "$out.env.log" ||
    { cat "$out.env.log" >&2; echo "FAIL: a service of $dir lacks what it needs to start" >&2; return 1; }
  for v in $K8S_VERSIONS; do
    log=$out.$v.log
    if ! unshare -n "$T/kubernetes-validate" -k "$v" --strict --quiet "$out.core" > "$log" 2>&1 || grep -q . "$log"; then
      # --quiet prints only failures and WARN lines: any line is a failure.
      cat "$log" >&2; echo "FAIL: $dir against Kubernetes $v (strict)" >&2; return 1
    fi
  done
  echo "ok: $dir: $(grep -c '^ok ' "$out.crd.log") CRD objects, $(grep -c '^kind:' "$out.core") core objects (Kubernetes ${K8S_VERSIONS// /, })"
}

echo "== yamllint"
unshare -n "$T/yamllint" -s -c k8s/.yamllint k8s

echo "== render and validate each overlay"
mkdir -p "$work/rendered"
for dir in k8s/overlays/*/; do
  dir=${dir%/}
  validate_overlay "$dir" "$work/rendered/$(basename "$dir").yaml"
done

echo "== checkov (security scan)"
mkdir -p "$work/checkov"
cp "$work"/rendered/*.yaml "$work/checkov/"
# Exit status 1 on failed checks; the JSON report says which (printed below either way).
unshare -n "$K8S_CHECKOV/bin/checkov" --skip-download --framework kubernetes -d "$work/checkov" \
  -o json > "$work/checkov.json" 2> "$work/checkov.err" || true
"$T/python" - "$work/checkov.json" <<'PY' || { cat "$work/checkov.err" >&2; echo "FAIL: checkov" >&2; exit 1; }
import json, sys
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
failed = parsing = passed = 0
skipped = {}
for report in reports:
    s = report["summary"]
    failed, parsing, passed = failed + s["failed"], parsing + s["parsing_errors"], passed + s["passed"]
    for c in report["results"]["failed_checks"]:
        print(f"FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})", file=sys.stderr)
    for c in report["results"]["skipped_checks"]:
        skipped.setdefault(c["check_id"], set()).add(c["resource"])
skips = ", ".join(f"{k} x{len(v)}" for k, v in sorted(skipped.items()))
print(f"ok: checkov {reports[0]['summary']['checkov_version']}: {passed} passed, {failed} failed, "
      f"skipped (justified by annotations): {skips or 'none'}")
sys.exit(1 if failed or parsing or not passed else 0)
PY

echo "== self-check: the validation must fail on unknown fields and a missing variable"
# expect_failure NAME PATCH: a copy of k8s/ whose production overlay carries PATCH must fail.
expect_failure() {
  local name=$1 patch=$2 copy=$work/self-$1
  cp -r k8s "$copy"
  printf '%s\n' "$patch" >> "$copy/overlays/production/kustomization.yaml"
  if validate_overlay "$copy/overlays/production" "$copy/rendered.yaml" > "$copy/log" 2>&1; then
    cat "$copy/log" >&2; echo "FAIL: self-check $name: the validation accepted it" >&2; exit 1
  fi
  echo "ok: rejected $name: $(grep -m1 -i 'fail\|error' "$copy/log" | cut -c1-160)"
}
expect_failure unknown-container-field '  - target:
      kind: Deployment
      name: shape-edge
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/bogusField
        value: 1'
expect_failure unknown-crd-field '  - target:
      kind: Cluster
      name: folio-db
    patch: |-
      - op: add
        path: /spec/postgresql/bogusField
        value: 1'
expect_failure missing-env-var '  - target:
      kind: Deployment
      name: notifier
    patch: |-
      - op: remove
        path: /spec/template/spec/containers/0/env/0'
echo "validate-k8s: all checks passed in $((SECONDS - start)) s"
