//! Folio in one process for local work: each service's own `run` (its `bind` then `Bound::run`,
//! the path its binary takes), each configured from the same environment (`FOLIO_…`) as its
//! binary, sharing one shutdown. The first service to fail stops the others.

use std::process::ExitCode;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "all-in-one",
    version,
    about = "Runs every Folio service in one process (configure each through FOLIO_… variables)"
)]
struct Config {
    #[command(flatten)]
    common: folio_runtime::CommonArgs,
}

impl folio_runtime::ServiceConfig for Config {
    fn common(&self) -> &folio_runtime::CommonArgs {
        &self.common
    }
}

#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// Each service's configuration from the environment alone: flags belong to all-in-one.
fn from_env<C: clap::Parser>(name: &str) -> Result<C, Failed> {
    C::try_parse_from([name]).map_err(|e| Failed(format!("{name}: {e}")))
}

async fn run(_config: Config, shutdown: tokio_util::sync::CancellationToken) -> Result<(), Failed> {
    let api: proposals_api::Config = from_env("proposals-api")?;
    let wal: wal_ingest::Config = from_env("wal-ingest")?;
    let edge: shape_edge::Config = from_env("shape-edge")?;
    let pdf: pdf_render::Config = from_env("pdf-render")?;
    let notify: notifier::Config = from_env("notifier")?;
    let stop_all = |what: &'static str, token: tokio_util::sync::CancellationToken| {
        move |result: Result<(), String>| {
            if let Err(e) = &result {
                tracing::error!("{what} failed: {e}");
            }
            token.cancel();
            result.map_err(|e| Failed(format!("{what}: {e}")))
        }
    };
    let s = shutdown.clone();
    let (a, w, e, p, n) = tokio::join!(
        async {
            stop_all("proposals-api", s.clone())(
                proposals_api::run(api, s.clone()).await.map_err(|e| folio_runtime::error_chain(&e)),
            )
        },
        async {
            stop_all("wal-ingest", s.clone())(
                wal_ingest::run(wal, s.clone()).await.map_err(|e| folio_runtime::error_chain(&e)),
            )
        },
        async {
            stop_all("shape-edge", s.clone())(
                shape_edge::run(edge, s.clone()).await.map_err(|e| folio_runtime::error_chain(&e)),
            )
        },
        async {
            stop_all("pdf-render", s.clone())(
                pdf_render::run(pdf, s.clone()).await.map_err(|e| folio_runtime::error_chain(&e)),
            )
        },
        async {
            stop_all("notifier", s.clone())(
                notifier::run(notify, s.clone()).await.map_err(|e| folio_runtime::error_chain(&e)),
            )
        },
    );
    a.and(w).and(e).and(p).and(n)
}

#[tokio::main]
async fn main() -> ExitCode {
    folio_runtime::service_main::<Config, _, _>("all-in-one", run).await
}
