//! One sandboxed typst worker: pdf-render starts a pool of these and sends them renders over
//! stdin/stdout (see `pdf_render::sandbox`). Not meant to be run by hand, except
//! `pdf-render-worker --memory-limit 256MiB --time-limit 10s --check-sandbox`.

use pdf_render::sandbox::child;

// Every allocation counted, so a template that goes over the memory limit is stopped and named.
#[global_allocator]
static ALLOC: child::CountingAlloc = child::CountingAlloc;

fn main() -> std::process::ExitCode {
    child::main(<child::WorkerArgs as clap::Parser>::parse())
}
