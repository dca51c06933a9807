//! The tokens file read again while meterd runs, so that tokens are added,
//! rotated and revoked without a restart (a Kubernetes Secret mounted as a
//! file changes in place).

use std::{sync::Arc, time::Duration};

use meter_grpc::TokenStore;

use crate::config::TokenSources;

/// Reads `sources.file` every `interval` and puts its tokens in force in
/// `store` when they differ from those in force. A file that cannot be
/// read, or whose tokens are refused (malformed, or none at all), is logged
/// once per change and leaves the tokens in force as they are. Runs until
/// aborted.
pub(crate) async fn reload(sources: TokenSources, store: TokenStore, interval: Duration) {
    let mut last: Option<String> = None;
    let mut unreadable = false;
    loop {
        tokio::time::sleep(interval).await;
        // A small file, read every few seconds: blocking this briefly is cheaper
        // than a blocking-pool thread.
        let text = match std::fs::read_to_string(&sources.file) {
            Ok(text) => {
                unreadable = false;
                text
            }
            Err(error) => {
                if !unreadable {
                    tracing::error!(
                        file = %sources.file.display(),
                        %error,
                        "cannot read the tokens file again; the tokens in force stay"
                    );
                }
                unreadable = true;
                continue;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            continue;
        }
        match sources.tokens(&text) {
            Ok(tokens) if tokens == *store.current() => {}
            Ok(tokens) => {
                tracing::info!(tokens = ?tokens, "tokens file changed: these tokens are in force");
                store.replace(Arc::new(tokens));
            }
            Err(error) => tracing::error!(
                %error,
                "the changed tokens file is refused; the tokens in force stay"
            ),
        }
        last = Some(text);
    }
}
