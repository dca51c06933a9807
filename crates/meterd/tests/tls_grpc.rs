//! TLS and mutual TLS on the gRPC port, with certificates made by the
//! `openssl` command line for each test: a caller that trusts meterd's CA
//! gets in; under mutual TLS, only with a certificate of the client CA.

mod support;

use std::path::Path;

use meter_api::v1::{GetBalanceRequest, credits_service_client::CreditsServiceClient};
use meter_testkit::tls::{certificates, read};
use meterd::{StoreConfig, config::TlsFiles};
use support::{Meterd, config};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

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
