//! `docs/configuration.md` is generated from the services' clap definitions, so it cannot
//! drift: this test fails when the file differs from what the flags say, and rewrites it when
//! run with `FOLIO_UPDATE_DOCS=1`.

use std::collections::BTreeMap;

use clap::CommandFactory;

#[derive(Debug, Clone)]
struct Flag {
    long: String,
    env: Option<String>,
    default: Option<String>,
    help: String,
}

fn flags(command: &clap::Command) -> Vec<Flag> {
    command
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| Flag {
            long: a.get_long().map(|l| format!("--{l}")).unwrap_or_else(|| a.get_id().to_string()),
            env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
            default: match a.get_default_values() {
                [] => None,
                values => Some(values.iter().map(|v| v.to_string_lossy()).collect::<Vec<_>>().join(",")),
            },
            help: a.get_long_help().or(a.get_help()).map(|h| h.to_string()).unwrap_or_default(),
        })
        .collect()
}

impl Flag {
    /// What identifies an option across services: its variable (or its flag when it has none).
    fn key(&self) -> &str {
        self.env.as_deref().unwrap_or(&self.long)
    }
}

fn row(flag: &Flag) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    format!(
        "| `{}` | {} | {} | {} |\n",
        flag.env.as_deref().unwrap_or("—"),
        format_args!("`{}`", flag.long),
        flag.default.as_deref().map(|d| format!("`{}`", cell(d))).unwrap_or_else(|| "—".into()),
        cell(&flag.help),
    )
}

fn render() -> String {
    let services: [(&str, clap::Command); 5] = [
        ("proposals-api", proposals_api::Config::command()),
        ("wal-ingest", wal_ingest::Config::command()),
        ("shape-edge", shape_edge::Config::command()),
        ("pdf-render", pdf_render::Config::command()),
        ("notifier", notifier::Config::command()),
    ];
    // A flag several services take (same variable) is documented once, with who takes it,
    // and must mean the same everywhere: `all-in-one` hands every service the same environment.
    let mut declared: BTreeMap<String, Vec<(&str, Flag)>> = BTreeMap::new();
    for (name, command) in &services {
        for flag in flags(command) {
            declared.entry(flag.key().to_owned()).or_default().push((name, flag));
        }
    }
    let disagreements: Vec<String> = declared
        .iter()
        .filter(|(_, seen)| seen.iter().any(|(_, f)| (&f.default, &f.long) != (&seen[0].1.default, &seen[0].1.long)))
        .map(|(key, seen)| format!("{key}: {seen:?}"))
        .collect();
    assert!(disagreements.is_empty(), "services disagree on a shared variable's flag or default: {disagreements:#?}");
    let header = "| variable | flag | default | meaning |\n|---|---|---|---|\n";
    let mut out = String::from(
        "# Configuration\n\n\
         Every option of every service, generated from their flag definitions by\n\
         `FOLIO_UPDATE_DOCS=1 cargo test -p all-in-one --test configuration` (the test fails when\n\
         this file and the flags disagree). Each option is a flag and an environment variable; the\n\
         variable is what deployments set. `all-in-one` reads every service's variables.\n\n\
         ## Shared\n\nVariables several services read. Most have one definition\n\
         (`folio_runtime::CommonArgs`, `folio_db::DbArgs`, `folio_bus::BusArgs`, `folio_auth::JwtArgs`);\n\
         the test that writes this file fails if any two services give one a different flag or default.\n\n",
    );
    out.push_str("| variable | flag | default | meaning | services |\n|---|---|---|---|---|\n");
    let mut shared_done = std::collections::HashSet::new();
    for (_, command) in &services {
        for flag in flags(command) {
            let who = &declared[flag.key()];
            if who.len() > 1 && shared_done.insert(flag.key().to_owned()) {
                let help = who.iter().map(|(_, f)| f.help.clone()).find(|h| !h.is_empty()).unwrap_or_default();
                let names: Vec<&str> = who.iter().map(|(name, _)| *name).collect();
                out.push_str(row(&Flag { help, ..flag }).trim_end());
                out.push_str(&format!(" {} |\n", names.join(", ")));
            }
        }
    }
    for (name, command) in &services {
        out.push_str(&format!("\n## {name}\n\n"));
        if let Some(about) = command.get_about() {
            out.push_str(&format!("{about}\n\n"));
        }
        out.push_str(header);
        for flag in flags(command) {
            if declared[flag.key()].len() == 1 {
                out.push_str(&row(&flag));
            }
        }
    }
    out
}

#[test]
fn docs_configuration_md_matches_the_flags() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let rendered = render();
    if std::env::var_os("FOLIO_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "docs/configuration.md is out of date: run FOLIO_UPDATE_DOCS=1 cargo test -p all-in-one --test configuration"
    );
}
