//! A TLS certificate of a test's own, made by `openssl` (an implementation independent of
//! the rustls the relay serves it with), for a relay's HTTPS and secure WebSocket listener.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context;

/// A self-signed certificate and its key, as PEM files in a directory.
pub struct TestCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Base64 of the SHA-256 of its public key (SPKI): what Chromium is told to trust.
    pub spki: String,
}

impl TestCertificate {
    /// A P-256 certificate for `names` (DNS names, or IP addresses), valid for two days.
    pub fn new(dir: &Path, names: &[&str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let alt: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                &format!("/CN={}", names.first().unwrap_or(&"test")),
            ])
            .args(["-addext", &format!("subjectAltName={}", alt.join(","))])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("run openssl (apt-get install -y openssl)")?;
        anyhow::ensure!(
            made.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let script = format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
            cert.display()
        );
        let spki = Command::new("sh").args(["-c", &script]).output()?;
        anyhow::ensure!(spki.status.success(), "the certificate's SPKI hash");
        let spki = String::from_utf8(spki.stdout)?.trim().to_owned();
        anyhow::ensure!(spki.len() == 44, "an SPKI hash: {spki:?}");
        Ok(Self { cert, key, spki })
    }

    /// An HTTPS request to `host:port` through `openssl s_client`, checking the server's
    /// certificate against this one (and the name `server_name`): the whole answer.
    pub fn request(&self, addr: &str, server_name: &str, request: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-connect",
                addr,
            ])
            .args(["-servername", server_name, "-verify_hostname", server_name])
            .arg("-CAfile")
            .arg(&self.cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run openssl s_client")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(request.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl s_client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
