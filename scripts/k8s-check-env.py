"""Checks that every Folio container of a rendered overlay gets what its service needs to start.

usage: k8s-check-env.py RENDERED.yaml

For each service the variables below must be listed in the container's env; every
configMapKeyRef must name a key ConfigMap folio-config has, and every secretKeyRef a Secret of
the overlay (when the overlay carries it: production creates its Secrets outside, see
docs/deploy.md) with that key. FOLIO_ENV must be production or development.
"""
import sys

import yaml

COMMON = ["FOLIO_ENV", "FOLIO_LOG_FORMAT", "FOLIO_ADMIN_ADDR", "FOLIO_NATS_URL", "FOLIO_STREAM_REPLICAS", "FOLIO_DATABASE_URL"]
REQUIRED = {
    "proposals-api": COMMON + ["FOLIO_API_ADDR", "FOLIO_JWT_SECRET", "FOLIO_CLIENT_LINK_SECRET"],
    "wal-ingest": COMMON + ["FOLIO_WAL_DB_PASSWORD"],
    "shape-edge": COMMON + ["FOLIO_EDGE_ADDR", "FOLIO_JWT_SECRET", "FOLIO_EDGE_PUBLIC_URL"],
    "pdf-render": COMMON + ["FOLIO_PDF_WORKER_BIN"],
    "notifier": COMMON + ["FOLIO_NOTIFIER_HTTP_ADDR", "FOLIO_JWT_SECRET", "FOLIO_UNSUBSCRIBE_SECRET", "FOLIO_CLIENT_LINK_SECRET", "FOLIO_SMTP_URL",
                          "FOLIO_PUBLIC_BASE_URL", "FOLIO_NOTIFIER_PUBLIC_URL"],
}

objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
config = next((o.get("data", {}) for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "folio-config"), None)
secrets = {o["metadata"]["name"]: set(o.get("data", {})) | set(o.get("stringData", {})) for o in objs if o["kind"] == "Secret"}
errors = []
if config is None:
    errors.append("ConfigMap folio-config is missing")
    config = {}
elif config.get("FOLIO_ENV") not in ("production", "development"):
    errors.append(f"folio-config FOLIO_ENV is {config.get('FOLIO_ENV')!r}")
seen = set()
for o in objs:
    if o["kind"] != "Deployment" or o["metadata"]["name"] not in REQUIRED:
        continue
    name = o["metadata"]["name"]
    for c in o["spec"]["template"]["spec"]["containers"]:
        if c["name"] != name:
            continue
        seen.add(name)
        env = {e["name"]: e for e in c.get("env", [])}
        for var in REQUIRED[name]:
            if var not in env:
                errors.append(f"{name}: {var} is not set")
        for var, e in env.items():
            ref = e.get("valueFrom", {})
            if "configMapKeyRef" in ref and ref["configMapKeyRef"]["key"] not in config:
                errors.append(f"{name}: {var} reads folio-config key {ref['configMapKeyRef']['key']}, which is missing")
            if "secretKeyRef" in ref:
                s = ref["secretKeyRef"]
                if s["name"] in secrets and s["key"] not in secrets[s["name"]]:
                    errors.append(f"{name}: {var} reads key {s['key']} of Secret {s['name']}, which has no such key")
for name in sorted(set(REQUIRED) - seen):
    errors.append(f"no Deployment/container {name}")
for e in errors:
    print(f"FAIL {e}")
print(f"env of {len(seen)} services checked, {len(errors)} problems")
sys.exit(1 if errors else 0)
