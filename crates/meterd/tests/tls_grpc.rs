//! TLS and mutual TLS on the gRPC port, with certificates made by the
//! `openssl` command line for each test: a caller that trusts meterd's CA
//! gets in; under mutual TLS, only with a certificate of the client CA.

mod support;

use std::{path::Path, process::Command};

use meter_api::v1::{GetBalanceRequest, credits_service_client::CreditsServiceClient};
use meterd::{StoreConfig, config::TlsFiles};
use support::{Meterd, config};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Runs `openssl` with `args` in `dir`; fails saying how to install it.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "the TLS tests make their certificates with the openssl command ({error}): \
                 `sudo apt-get install -y openssl`, or `make test-deps`"
            )
        });
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA named `name`: `<name>.pem`, `<name>.key`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `name` for `san`, signed by the CA `by`.
fn leaf(dir: &Path, name: &str, san: &str, by: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{by}.pem"),
            "-CAkey",
            &format!("{by}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).expect("read")
}

/// Certificates: meterd's (CA `server-ca`), a client of `client-ca`, and a
/// stranger's client certificate of another CA.
fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path();
    for name in ["server-ca", "client-ca", "stranger-ca"] {
        ca(path, name);
    }
    leaf(path, "server", "DNS:localhost,IP:127.0.0.1", "server-ca");
    leaf(path, "client", "DNS:billing-api", "client-ca");
    leaf(path, "stranger", "DNS:stranger", "stranger-ca");
    dir
}

async fn start(dir: &Path, mutual: bool) -> Meterd {
    Meterd::start(meterd::Config {
        tls: Some(TlsFiles {
            cert: read(dir, "server.pem"),
            key: read(dir, "server.key"),
            client_ca: mutual.then(|| read(dir, "client-ca.pem")),
        }),
        ..config(StoreConfig::Memory)
    })
    .await
}

/// A GetBalance over TLS trusting meterd's CA, presenting `identity` if
/// any: whether it was answered.
async fn call(meterd: &Meterd, dir: &Path, identity: Option<&str>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(dir, "server-ca.pem")))
        .domain_name("localhost");
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(
            read(dir, &format!("{name}.pem")),
            read(dir, &format!("{name}.key")),
        ));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", meterd.addr.port()))
        .expect("uri")
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    CreditsServiceClient::new(channel)
        .get_balance(GetBalanceRequest {
            account_id: "org_tls".into(),
        })
        .await
        .map(drop)
        .map_err(|status| format!("call: {status:?}"))
}

#[tokio::test]
async fn tls_serves_callers_that_trust_its_ca_and_not_plaintext() {
    let dir = certificates();
    let meterd = start(dir.path(), false).await;
    call(&meterd, dir.path(), None)
        .await
        .expect("a caller trusting the CA");
    let plaintext = meterd
        .credits()
        .get_balance(GetBalanceRequest {
            account_id: "org_tls".into(),
        })
        .await;
    assert!(plaintext.is_err(), "plaintext is not served: {plaintext:?}");
}

#[tokio::test]
async fn mutual_tls_refuses_unknown_client_certificates() {
    let dir = certificates();
    let meterd = start(dir.path(), true).await;
    call(&meterd, dir.path(), Some("client"))
        .await
        .expect("a certificate of the client CA");
    for (identity, what) in [
        (Some("stranger"), "a certificate of another CA"),
        (None, "no certificate"),
    ] {
        let refused = call(&meterd, dir.path(), identity).await.expect_err(what);
        // Refused by meterd on the wire, not by the client's own setup.
        assert!(
            refused.starts_with("connect:") || refused.starts_with("call:"),
            "{what}: {refused}"
        );
    }
}
