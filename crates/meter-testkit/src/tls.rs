//! Certificates for TLS tests, made by the `openssl` command line (Debian's
//! `openssl`): a server's, a client's and a stranger's, each of its own CA.

use std::{path::Path, process::Command};

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

/// The bytes of `file` in `dir`.
pub fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).expect("read")
}

/// A temporary directory of certificates (`<name>.pem`, `<name>.key`):
/// `server` for `localhost` and 127.0.0.1 (CA `server-ca`), `client`
/// (CA `client-ca`), and `stranger`, a client certificate of another CA.
pub fn certificates() -> tempfile::TempDir {
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
