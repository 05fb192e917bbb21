//! The fault suite, round after round, for soaking: `fault-soak --rounds 20`. Prints each
//! round's recovery table; stops at the first loss, duplicate or reordering.

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Rounds of every fault.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = folio_faults::suite::run(args.rounds).await?;
    println!("{}", report.markdown());
    Ok(())
}
