//! The `meterd` binary: parse flags, set up logs, bind, run until a signal.

use std::process::ExitCode;

use clap::Parser;
use meterd::{Cli, Stop, logging};

// Every request allocates a little (HTTP/2 frames, protobuf, Redis replies);
// mimalloc serves that from thread-local pages, cheaper than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let shutdown = shutdown_signal();
    logging::init(&cli.log);
    let listen = cli.grpc.listen;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The bound address, not the flag: `--listen 127.0.0.1:0` picks a port.
    let listen = listener.local_addr().unwrap_or(listen);
    tracing::info!(%listen, plans = config.catalog.plans().count(), "meterd serving gRPC");
    match meterd::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Registers for SIGTERM (Kubernetes) and SIGINT (Ctrl-C) now, so that a
/// signal arriving during start-up is not lost, and resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> impl Future<Output = Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => Stop::Terminate,
                    _ = interrupt.recv() => Stop::Interrupt,
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(
                    "cannot listen for SIGTERM/SIGINT: {e}; meterd stops only when killed"
                );
                std::future::pending::<Stop>().await
            }
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl Future<Output = Stop> {
    async {
        let _ = tokio::signal::ctrl_c().await;
        Stop::Interrupt
    }
}
