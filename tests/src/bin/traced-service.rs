//! One Folio service in a process of its own, on a sandbox the test process made
//! (`Sandbox::attach`), exporting its traces over OTLP as a deployed service does: through
//! `folio_runtime::telemetry::init` with its own `service.name`. Telemetry is global to a
//! process, so a test that must tell services apart by their resource runs each in one of these
//! (`tests/one_trace.rs`).
//!
//! Prints `READY <addr>` (the service's gRPC or HTTP address, `-` for none) once ready, runs
//! until its standard input closes, then stops the service and flushes its spans.

use std::process::ExitCode;

use clap::Parser;
use folio_testkit::Sandbox;
use tokio::io::AsyncReadExt as _;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Service {
    ProposalsApi,
    WalIngest,
    Notifier,
    PdfRender,
    ShapeEdge,
}

#[derive(Debug, clap::Parser)]
#[command(name = "traced-service", about = "Runs one Folio service on a test's sandbox, exporting OTLP traces")]
struct Args {
    #[arg(value_enum)]
    service: Service,
    /// The sandbox's database.
    #[arg(long)]
    database_url: String,
    #[arg(long)]
    nats_url: String,
    /// The sandbox's `suffix`: its stream, slot, consumer and bucket names.
    #[arg(long)]
    suffix: String,
    /// Where spans go (OTLP/gRPC).
    #[arg(long)]
    otlp_endpoint: String,
    /// The notifier's SMTP server.
    #[arg(long, default_value = "smtp://127.0.0.1:2525")]
    smtp_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    folio_runtime::install_crypto_provider();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traced-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let sandbox = Sandbox::attach(&args.database_url, args.nats_url.clone(), args.suffix.clone()).await?;
    let otlp = Some(args.otlp_endpoint.clone());
    let (telemetry, result) = match args.service {
        Service::ProposalsApi => {
            let mut config = sandbox.api_config();
            config.common.otlp_endpoint = otlp;
            let telemetry = folio_runtime::telemetry::init("proposals-api", &config.common)?;
            let bound = proposals_api::bind(config).await?;
            let addr = bound.addr().to_string();
            (telemetry, serve(bound.spawn(), &addr).await)
        }
        Service::WalIngest => {
            let mut config = sandbox.wal_ingest_config();
            config.common.otlp_endpoint = otlp;
            let telemetry = folio_runtime::telemetry::init("wal-ingest", &config.common)?;
            (telemetry, serve(wal_ingest::bind(config).await?.spawn(), "-").await)
        }
        Service::Notifier => {
            let mut config = sandbox.notifier_config();
            config.common.otlp_endpoint = otlp;
            config.smtp_url = args.smtp_url.clone();
            let telemetry = folio_runtime::telemetry::init("notifier", &config.common)?;
            let bound = notifier::bind(config).await?;
            let addr = bound.http_addr().to_string();
            (telemetry, serve(bound.spawn(), &addr).await)
        }
        Service::PdfRender => {
            let mut config = sandbox.pdf_render_config();
            config.common.otlp_endpoint = otlp;
            let telemetry = folio_runtime::telemetry::init("pdf-render", &config.common)?;
            (telemetry, serve(pdf_render::bind(config).await?.spawn(), "-").await)
        }
        Service::ShapeEdge => {
            let mut config = sandbox.edge_config();
            config.common.otlp_endpoint = otlp;
            let telemetry = folio_runtime::telemetry::init("shape-edge", &config.common)?;
            let bound = shape_edge::bind(config).await?;
            let addr = bound.http_addr().to_string();
            (telemetry, serve(bound.spawn(), &addr).await)
        }
    };
    // Whatever happened, the spans recorded so far go out: they are what the test reads.
    telemetry.shutdown();
    result
}

async fn serve<E: std::error::Error + Send + 'static>(
    service: folio_runtime::Spawned<E>,
    addr: &str,
) -> anyhow::Result<()> {
    if let Err(e) = service.ready(std::time::Duration::from_secs(60)).await {
        let stopped = service.stop().await;
        anyhow::bail!("not ready: {e} ({stopped:?})");
    }
    println!("READY {addr}");
    // The test closes our standard input to stop us (and so does its end).
    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
    service.stop().await.map_err(anyhow::Error::msg)
}
