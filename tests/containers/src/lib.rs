//! Folio's services as Kubernetes would run them, under a container engine: each container gets
//! the image, arguments, environment, ports, probes and security settings of its Deployment in
//! the rendered production overlay (`scripts/render-k8s.sh production`), so the manifests and
//! the images cannot drift apart unnoticed. What Kubernetes would supply from outside the
//! manifests — Secrets' values, the operator-run PostgreSQL and NATS — the test supplies.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

/// The repository's root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// The objects of a rendered kustomize overlay.
pub struct Manifests {
    objects: Vec<Value>,
}

impl Manifests {
    /// Renders `k8s/overlays/<overlay>` with the project's own script.
    pub fn render(overlay: &str) -> anyhow::Result<Self> {
        let root = repo_root();
        let out = Command::new(root.join("scripts/render-k8s.sh"))
            .arg(overlay)
            .current_dir(&root)
            .output()
            .context("run scripts/render-k8s.sh")?;
        if !out.status.success() {
            bail!("scripts/render-k8s.sh {overlay} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let objects: Vec<Value> = serde_json::from_slice(&out.stdout).context("render-k8s.sh printed no JSON array")?;
        Ok(Self { objects })
    }

    fn find(&self, kind: &str, name: &str) -> anyhow::Result<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .with_context(|| format!("the manifests have no {kind} {name}"))
    }

    /// The container named like its Deployment, as the pod would run it.
    pub fn service(&self, name: &str) -> anyhow::Result<ServiceSpec> {
        let deployment = self.find("Deployment", name)?;
        let pod = &deployment["spec"]["template"]["spec"];
        let container = pod["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .with_context(|| format!("Deployment {name} has no container named {name}"))?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
        };
        let ports: BTreeMap<String, u16> = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["containerPort"].as_u64()? as u16)))
            .collect();
        let probe = |key: &str| -> anyhow::Result<Probe> {
            let get = &container[key]["httpGet"];
            let path = get["path"].as_str().with_context(|| format!("{name}: {key} has no httpGet.path"))?;
            let port = match &get["port"] {
                Value::Number(n) => n.as_u64().context("port")? as u16,
                Value::String(s) => *ports.get(s).with_context(|| format!("{name}: {key} names unknown port {s}"))?,
                other => bail!("{name}: {key} port {other}"),
            };
            Ok(Probe { path: path.to_owned(), port })
        };
        let mut env = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().context("env entry without a name")?.to_owned();
            let source = if let Some(v) = e["value"].as_str() {
                EnvSource::Value(v.to_owned())
            } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
                EnvSource::ConfigMap { name: str_of(r, "name")?, key: str_of(r, "key")? }
            } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                EnvSource::Secret { name: str_of(r, "name")?, key: str_of(r, "key")? }
            } else {
                bail!("{name}: env {var} has a source this test does not know: {e}");
            };
            env.push((var, source));
        }
        if container.get("envFrom").is_some() {
            bail!("{name}: envFrom hides which variables a service gets; list them under env");
        }
        let security = &container["securityContext"];
        let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
        let scratch_dirs = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| volumes.iter().any(|v| v["name"] == m["name"] && v.get("emptyDir").is_some()))
            .filter_map(|m| m["mountPath"].as_str().map(str::to_owned))
            .collect();
        Ok(ServiceSpec {
            name: name.to_owned(),
            image: container["image"].as_str().context("image")?.to_owned(),
            command: strings(&container["command"]),
            args: strings(&container["args"]),
            env,
            ports: ports.clone(),
            startup: probe("startupProbe")?,
            readiness: probe("readinessProbe")?,
            liveness: probe("livenessProbe")?,
            run_as_user: security["runAsUser"]
                .as_u64()
                .or_else(|| pod["securityContext"]["runAsUser"].as_u64())
                .context("runAsUser")?,
            read_only_root: security["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
            scratch_dirs,
        })
    }

    /// The value of `key` in ConfigMap `name`.
    pub fn config_value(&self, name: &str, key: &str) -> anyhow::Result<String> {
        let map = self.find("ConfigMap", name)?;
        map["data"][key].as_str().map(str::to_owned).with_context(|| format!("ConfigMap {name} has no key {key}"))
    }
}

fn str_of(map: &serde_json::Map<String, Value>, key: &str) -> anyhow::Result<String> {
    map.get(key).and_then(Value::as_str).map(str::to_owned).with_context(|| format!("no {key} in {map:?}"))
}

#[derive(Debug, Clone)]
pub enum EnvSource {
    Value(String),
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub path: String,
    pub port: u16,
}

/// One Deployment's container.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvSource)>,
    pub ports: BTreeMap<String, u16>,
    pub startup: Probe,
    pub readiness: Probe,
    pub liveness: Probe,
    pub run_as_user: u64,
    pub read_only_root: bool,
    /// Mount paths of emptyDir volumes (tmpfs here).
    pub scratch_dirs: Vec<String>,
}

impl ServiceSpec {
    /// The environment as the kubelet would give it: ConfigMap values looked up, Secrets from
    /// `secret(name, key)`, and `$(VAR)` references to earlier variables expanded.
    pub fn environment(
        &self,
        manifests: &Manifests,
        secret: impl Fn(&str, &str) -> Option<String>,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut resolved: Vec<(String, String)> = Vec::new();
        for (var, source) in &self.env {
            let value = match source {
                EnvSource::Value(v) => expand(v, &resolved),
                EnvSource::ConfigMap { name, key } => manifests.config_value(name, key)?,
                EnvSource::Secret { name, key } => secret(name, key).with_context(|| {
                    format!("{}: env {var} needs Secret {name} key {key}, which the test does not provide", self.name)
                })?,
            };
            resolved.push((var.clone(), value));
        }
        Ok(resolved)
    }

    /// The image's name and tag, the tag replaced by `tag` (the images a test run built).
    pub fn image_with_tag(&self, tag: &str) -> (String, String) {
        let name = self.image.rsplit_once(':').map_or(self.image.as_str(), |(n, _)| n);
        (name.to_owned(), tag.to_owned())
    }
}

/// Kubernetes' `$(VAR)` expansion against the variables defined before; unknown ones stay as written.
fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match defined.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Builds (or finds up to date) the images of the binaries this test run built, tagged `tag`.
pub fn build_images(tag: &str) -> anyhow::Result<Duration> {
    let root = repo_root();
    // Integration tests run from <target>/debug/deps; the service binaries are in <target>/debug.
    let exe = std::env::current_exe()?;
    let bins = exe.parent().and_then(Path::parent).context("the test binary's directory")?;
    for bin in
        ["proposals-api", "wal-ingest", "shape-edge", "pdf-render", "pdf-render-worker", "notifier", "all-in-one"]
    {
        if !bins.join(bin).exists() {
            bail!(
                "{} is missing: build the services first (`cargo build --workspace --bins`, which the test command does)",
                bins.join(bin).display()
            );
        }
    }
    let started = Instant::now();
    let status = Command::new(root.join("scripts/build-images.sh"))
        .args(["--bins", &bins.display().to_string(), "--tag", tag])
        .current_dir(&root)
        .status()
        .context("run scripts/build-images.sh")?;
    if !status.success() {
        bail!("scripts/build-images.sh failed ({status})");
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn dollar_parens_expand_like_the_kubelet() {
        let defined = [("PW".to_owned(), "s3cret".to_owned())];
        assert_eq!(expand("postgres://u:$(PW)@db/x", &defined), "postgres://u:s3cret@db/x");
        assert_eq!(expand("$(MISSING) and $(PW", &defined), "$(MISSING) and $(PW");
    }
}
