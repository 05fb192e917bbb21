"""Validates rendered Kubernetes objects whose kinds come from CRDs against vendored CRD schemas.

usage: k8s-validate-crds.py SCHEMA_DIR RENDERED.yaml CORE_OUT.yaml

Every object of a kind some CRD in SCHEMA_DIR defines (matched on group, version and kind) is
validated against that version's openAPIV3Schema, strictly: an object schema that lists
properties and neither allows additionalProperties nor carries
x-kubernetes-preserve-unknown-fields gets additionalProperties: false, so an unknown field fails
as the API server's strict field validation would. Objects of other kinds are written to
CORE_OUT.yaml for kubernetes-validate. Exit status 1 on any failure.
"""
import copy
import glob
import sys

import jsonschema
import yaml


def strict(schema):
    """A copy of an OpenAPI v3 structural schema that rejects unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # The API server validates metadata itself; a CRD schema leaves it open.
    schema.setdefault("properties", {})["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return schema


def load_crds(schema_dir):
    schemas = {}
    for path in sorted(glob.glob(f"{schema_dir}/*.yaml")):
        for crd in yaml.safe_load_all(open(path)):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                raw = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = (strict(raw), path)
    return schemas


def main():
    schema_dir, rendered, core_out = sys.argv[1:4]
    schemas = load_crds(schema_dir)
    groups = {api.split("/")[0] for api, _ in schemas}
    failures, core, checked = 0, [], 0
    for obj in yaml.safe_load_all(open(rendered)):
        if not obj:
            continue
        key = (obj.get("apiVersion"), obj.get("kind"))
        name = f"{key[1]} {obj.get('metadata', {}).get('name')} ({key[0]})"
        if key not in schemas:
            if "/" in (key[0] or "") and key[0].split("/")[0] in groups:
                print(f"FAIL {name}: no vendored schema for this version or kind")
                failures += 1
            else:
                core.append(obj)
            continue
        schema, path = schemas[key]
        # OpenAPI v3.0 is closest to draft 4 (boolean exclusiveMinimum/Maximum).
        validator = jsonschema.Draft4Validator(schema)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        checked += 1
        for error in errors:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            print(f"FAIL {name} at {where}: {error.message}")
            failures += 1
        if not errors:
            print(f"ok {name} against {path.rsplit('/', 1)[-1]}")
    with open(core_out, "w") as out:
        yaml.safe_dump_all(core, out, sort_keys=False)
    print(f"{checked} CRD objects checked, {failures} failures; {len(core)} core objects left for kubernetes-validate")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
