//! shape-edge: parse the configuration, then run until SIGTERM (see `folio_runtime::service_main`).

// Tens of thousands of live requests allocate and free small objects on every wake-up: glibc's
// allocator spent a quarter of the edge's CPU in the fan-out profile (consolidating free
// chunks). Without transparent huge pages (`no_thp`): each fresh 2 MiB page it asked for was
// zeroed on first touch, half of the initial sync's CPU (ratio to COPY 0.35 -> 0.52).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    folio_runtime::service_main::<shape_edge::Config, _, _>("shape-edge", shape_edge::run).await
}
