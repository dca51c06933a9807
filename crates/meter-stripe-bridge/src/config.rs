//! Flags with environment fallbacks, parsed into a checked [`Config`].

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::Parser;

use crate::signature::Secrets;

/// Receives Stripe webhooks, verifies them and applies them to meterd,
/// each event once.
#[derive(Debug, Parser)]
#[command(name = "meter-stripe-bridge", version)]
pub struct Cli {
    /// Address to serve HTTP on (POST /webhooks/stripe, GET /healthz, GET /readyz).
    #[arg(long, env = "METER_BRIDGE_LISTEN", default_value = "[::]:8080")]
    pub listen: SocketAddr,
    /// meterd's gRPC address.
    #[arg(long, env = "METERD_ADDR", default_value = "http://127.0.0.1:50051")]
    pub meterd: String,
    /// The bearer token the bridge sends meterd (a `write` token), when
    /// meterd requires tokens.
    #[arg(long, env = "METERD_TOKEN", hide_env_values = true)]
    pub meterd_token: Option<SecretList>,
    /// A file holding that token, instead of --meterd-token.
    #[arg(long, env = "METERD_TOKEN_FILE")]
    pub meterd_token_file: Option<PathBuf>,
    /// PEM file of the CA certificates that signed meterd's (meterd with
    /// --tls-cert); needs an `https://` --meterd.
    #[arg(long, env = "METERD_CA_FILE")]
    pub meterd_ca: Option<PathBuf>,
    /// PEM file of the bridge's client certificate, for meterd with
    /// --tls-client-ca (mutual TLS); with --meterd-key.
    #[arg(long, env = "METERD_CLIENT_CERT_FILE", requires = "meterd_key")]
    pub meterd_cert: Option<PathBuf>,
    /// PEM file of that certificate's private key.
    #[arg(long, env = "METERD_CLIENT_KEY_FILE", requires = "meterd_cert")]
    pub meterd_key: Option<PathBuf>,
    /// The endpoint's signing secrets (`whsec_…`), comma-separated: several
    /// while a secret is rotated.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<SecretList>,
    /// A file holding the signing secrets (comma- or line-separated), instead of --webhook-secret.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// How far a signature's timestamp may be from now: `300s`, `5m`.
    #[arg(long, env = "METER_BRIDGE_TOLERANCE", default_value = "300s", value_parser = parse_seconds)]
    pub tolerance: Duration,
    /// Record payments without a credit pack as this usage metric (e.g.
    /// `donation_processed`), the amount in the currency's smallest unit.
    #[arg(long, env = "METER_BRIDGE_DONATION_METRIC")]
    pub donation_metric: Option<String>,
    /// What to log, as RUST_LOG filters.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// Log JSON lines instead of human-readable ones.
    #[arg(long, env = "METER_BRIDGE_LOG_JSON")]
    pub log_json: bool,
}

/// Secrets as given on the command line; never printed.
#[derive(Clone)]
pub struct SecretList(String);

impl fmt::Debug for SecretList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretList(redacted)")
    }
}

impl FromStr for SecretList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(Self(text.to_owned()))
    }
}

/// The `authorization` metadata sent to meterd; never printed.
#[derive(Clone)]
pub struct MeterdToken(pub tonic::metadata::AsciiMetadataValue);

impl fmt::Debug for MeterdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeterdToken(redacted)")
    }
}

impl MeterdToken {
    /// `Bearer <token>`; `None` when the token cannot be sent as metadata.
    pub fn new(token: &str) -> Option<Self> {
        let mut value: tonic::metadata::AsciiMetadataValue =
            format!("Bearer {}", token.trim()).parse().ok()?;
        value.set_sensitive(true);
        Some(Self(value))
    }
}

/// Everything [`crate::run`] needs, checked.
#[derive(Debug)]
pub struct Config {
    /// meterd's gRPC address.
    pub meterd: String,
    /// The token sent to meterd, if it requires one.
    pub meterd_token: Option<MeterdToken>,
    /// TLS to meterd, for an `https://` address.
    pub meterd_tls: Option<tonic::transport::ClientTlsConfig>,
    /// The signing secrets.
    pub secrets: Secrets,
    /// How far a signature's timestamp may be from now.
    pub tolerance: Duration,
    /// The usage metric of payments without a credit pack.
    pub donation_metric: Option<String>,
}

/// Why the flags were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No secret given.
    #[error(
        "no signing secret: set --webhook-secret / STRIPE_WEBHOOK_SECRET (whsec_…) or --webhook-secret-file"
    )]
    NoSecret,
    /// The token for meterd is unusable.
    #[error("--meterd-token / METERD_TOKEN{0}: not a token (printable ASCII, no spaces)")]
    MeterdToken(&'static str),
    /// The token file cannot be read.
    #[error("cannot read --meterd-token-file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret file cannot be read.
    #[error("cannot read --webhook-secret-file {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key file cannot be read.
    #[error("cannot read {flag} {path}: {source}")]
    TlsFile {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key file without a PEM block of its kind.
    #[error("{flag} {path} holds no PEM {kind} block (-----BEGIN {kind}-----)")]
    NotPem {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The block it needs.
        kind: String,
    },
    /// An `https://` address without the CA to check meterd's certificate by.
    #[error(
        "--meterd {0} is https: give --meterd-ca / METERD_CA_FILE, the PEM of the CA that signed meterd's certificate"
    )]
    NoCa(String),
    /// TLS files for a plaintext address.
    #[error(
        "--meterd {0} is not https: TLS files (--meterd-ca, --meterd-cert) need an https:// address"
    )]
    TlsWithoutHttps(String),
}

/// The PEM labels rustls reads as a certificate.
const CERTIFICATE: &[&str] = &["CERTIFICATE"];
/// The PEM labels of an unencrypted private key (PKCS#8, PKCS#1, SEC1).
const PRIVATE_KEY: &[&str] = &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

/// Reads the PEM file `path` that `flag` names, which must hold a block of
/// one of `labels` (the first names it in errors): a file without one would
/// only fail the first handshake.
fn pem(
    flag: &'static str,
    path: &PathBuf,
    labels: &'static [&'static str],
) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::TlsFile {
        flag,
        path: path.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let has = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.trim_end().strip_suffix("-----"))
            .is_some_and(|label| labels.contains(&label))
    });
    if has {
        Ok(bytes)
    } else {
        Err(ConfigError::NotPem {
            flag,
            path: path.clone(),
            kind: labels[0].to_owned(),
        })
    }
}

impl Cli {
    /// Checks the flags and reads the secrets.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut list = self.webhook_secret.map(|s| s.0).unwrap_or_default();
        if let Some(path) = &self.webhook_secret_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                path: path.clone(),
                source,
            })?;
            list = format!("{list},{}", text.replace('\n', ","));
        }
        let secrets = Secrets::parse(&list).ok_or(ConfigError::NoSecret)?;
        let token = match &self.meterd_token_file {
            Some(path) => Some((
                std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                })?,
                " (file)",
            )),
            None => self.meterd_token.map(|t| (t.0, "")),
        };
        let meterd_token = match token {
            Some((text, _)) if text.trim().is_empty() => None,
            Some((text, origin)) => {
                Some(MeterdToken::new(&text).ok_or(ConfigError::MeterdToken(origin))?)
            }
            None => None,
        };
        let https = self
            .meterd
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let meterd_tls =
            match (&self.meterd_ca, https) {
                (None, false) if self.meterd_cert.is_none() => None,
                (_, false) => return Err(ConfigError::TlsWithoutHttps(self.meterd)),
                (None, true) => return Err(ConfigError::NoCa(self.meterd)),
                (Some(ca), true) => {
                    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
                    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                        pem("--meterd-ca", ca, CERTIFICATE)?,
                    ));
                    if let (Some(cert), Some(key)) = (&self.meterd_cert, &self.meterd_key) {
                        tls = tls.identity(Identity::from_pem(
                            pem("--meterd-cert", cert, CERTIFICATE)?,
                            pem("--meterd-key", key, PRIVATE_KEY)?,
                        ));
                    }
                    Some(tls)
                }
            };
        Ok(Config {
            meterd: self.meterd,
            meterd_token,
            meterd_tls,
            secrets,
            tolerance: self.tolerance,
            donation_metric: self.donation_metric.filter(|m| !m.is_empty()),
        })
    }
}

/// Parses `300s`, `5m` or `300` (seconds).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let (number, scale) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| Duration::from_secs(n * scale))
        .ok_or_else(|| format!("{text:?} is not a duration such as 300s or 5m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_parse_and_secrets_never_print() {
        assert_eq!(parse_seconds("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_seconds("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_seconds("0s").is_err() && parse_seconds("soon").is_err());
        let cli = Cli::parse_from(["bridge", "--webhook-secret", "whsec_a,whsec_b"]);
        assert!(!format!("{cli:?}").contains("whsec"), "{cli:?}");
        let config = cli.into_config().expect("valid");
        assert_eq!(config.secrets.len(), 2);
        assert!(!format!("{config:?}").contains("whsec"));
    }
}
