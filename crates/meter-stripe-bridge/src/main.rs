//! The `meter-stripe-bridge` binary: flags, logs, signals, run.

use std::process::ExitCode;

use clap::Parser;
use meter_stripe_bridge::{Cli, run};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let listen = cli.listen;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("meter-stripe-bridge: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("meter-stripe-bridge: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(_) => {
                        let _ = interrupt.await;
                        return;
                    }
                };
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
        tracing::info!("stopping: finishing the deliveries in flight");
    };
    match run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meter-stripe-bridge: {error}");
            ExitCode::FAILURE
        }
    }
}
