//! The `meter-bench` binary: parse flags, run, print the report.

use std::process::ExitCode;

use clap::Parser;
use meter_bench::{Args, bench};

// The load generator shares the machine with meterd and Redis: the less it
// spends per request, the more of the machine is left for what it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args).await {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("cannot encode JSON: {e}"),
                }
            } else {
                print!("{}", report.text());
            }
            if let Some(path) = &args.markdown
                && let Err(e) = std::fs::write(path, report.markdown())
            {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            let failed = report
                .rows
                .iter()
                .any(|r| !r.check_ok || !r.errors.is_empty());
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("meter-bench: {e}");
            ExitCode::from(2)
        }
    }
}
