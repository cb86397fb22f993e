//! The real SFTP port on russh (a maintained, pure-Rust SSH implementation).
//!
//! Built only with the `sftp` feature, so the Lambdas that never talk to an SFTP server do
//! not carry an SSH stack. The server's host key is always checked against the configured
//! SHA-256 fingerprint: a poller copying client files must never talk to an impostor. The
//! session is opened on first use and kept for the life of the Lambda instance; any error
//! drops it, so the next call reconnects.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{OpenFlags, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::StepError;
use crate::config::SftpConfig;
use crate::ports::{ObjectReader, RemoteFile, Sftp};

/// How the client logs in, read from the secret: JSON with `password` or `private_key`
/// (OpenSSH PEM, optionally with `passphrase`).
#[derive(Clone, Deserialize)]
pub struct SftpCredentials {
    /// A password.
    #[serde(default)]
    pub password: Option<String>,
    /// An OpenSSH private key.
    #[serde(default)]
    pub private_key: Option<String>,
    /// The private key's passphrase.
    #[serde(default)]
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for SftpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SftpCredentials(redacted)")
    }
}

/// True when a server key matches a `SHA256:…` fingerprint (as `ssh-keygen -lf` prints it).
pub fn fingerprint_matches(key: &russh::keys::PublicKey, expected: &str) -> bool {
    key.fingerprint(HashAlg::Sha256).to_string() == expected.trim()
}

struct Checker {
    expected: String,
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = match server {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                fingerprint_matches(key, &self.expected)
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            tracing::error!(
                "SFTP host key does not match sftp.host_key_sha256; refusing to connect"
            );
        }
        Ok(ok)
    }
}

/// An SFTP client for one server.
pub struct SftpClient {
    config: SftpConfig,
    credentials: SftpCredentials,
    session: Mutex<Option<Arc<SftpSession>>>,
}

impl std::fmt::Debug for SftpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpClient")
            .field("host", &self.config.host)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> StepError {
    StepError::retryable(format!("SFTP {what}: {e}"))
}

impl SftpClient {
    /// A client; it connects on first use.
    pub fn new(config: SftpConfig, secret: &str) -> Result<Self, crate::Error> {
        let credentials: SftpCredentials = serde_json::from_str(secret).map_err(|e| {
            format!("the SFTP secret must be JSON with password or private_key: {e}")
        })?;
        if credentials.password.is_none() && credentials.private_key.is_none() {
            return Err("the SFTP secret has neither password nor private_key".into());
        }
        Ok(Self {
            config,
            credentials,
            session: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Arc<SftpSession>, StepError> {
        let config = Arc::new(russh::client::Config::default());
        let checker = Checker {
            expected: self.config.host_key_sha256.clone(),
        };
        let mut handle = russh::client::connect(
            config,
            (self.config.host.as_str(), self.config.port),
            checker,
        )
        .await
        .map_err(|e| failed("connect", e))?;
        let user = self.config.user.clone();
        let auth = match (&self.credentials.private_key, &self.credentials.password) {
            (Some(pem), _) => {
                let key =
                    russh::keys::decode_secret_key(pem, self.credentials.passphrase.as_deref())
                        .map_err(|e| StepError::permanent(format!("SFTP private key: {e}")))?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| failed("auth", e))?
                    .flatten();
                handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                    .await
            }
            (None, Some(password)) => handle.authenticate_password(user, password).await,
            (None, None) => return Err(StepError::permanent("no SFTP credentials")),
        };
        if !auth.map_err(|e| failed("auth", e))?.success() {
            return Err(StepError::permanent(format!(
                "SFTP login as {} refused",
                self.config.user
            )));
        }
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| failed("channel", e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| failed("subsystem", e))?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| failed("session", e))?;
        Ok(Arc::new(sftp))
    }

    async fn session(&self) -> Result<Arc<SftpSession>, StepError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = &*slot {
            return Ok(session.clone());
        }
        let session = self.connect().await?;
        *slot = Some(session.clone());
        Ok(session)
    }

    async fn forget<T>(&self, result: Result<T, StepError>) -> Result<T, StepError> {
        if result.is_err() {
            *self.session.lock().await = None;
        }
        result
    }
}

#[async_trait]
impl Sftp for SftpClient {
    async fn list(&self, dir: &str) -> Result<Vec<RemoteFile>, StepError> {
        let result = async {
            let entries = self
                .session()
                .await?
                .read_dir(dir)
                .await
                .map_err(|e| failed("list", e))?;
            Ok(entries
                .filter(|e| e.metadata().is_regular())
                .map(|e| {
                    let meta = e.metadata();
                    RemoteFile {
                        path: format!("{}/{}", dir.trim_end_matches('/'), e.file_name()),
                        size: meta.size.unwrap_or_default(),
                        modified: meta.mtime.map(u64::from).unwrap_or_default(),
                    }
                })
                .collect())
        }
        .await;
        self.forget(result).await
    }

    async fn read(&self, path: &str) -> Result<Bytes, StepError> {
        let result = async {
            Ok(Bytes::from(
                self.session()
                    .await?
                    .read(path)
                    .await
                    .map_err(|e| failed("read", e))?,
            ))
        }
        .await;
        self.forget(result).await
    }

    async fn open(&self, path: &str) -> Result<ObjectReader, StepError> {
        let result = async {
            let file = self
                .session()
                .await?
                .open(path)
                .await
                .map_err(|e| failed("open", e))?;
            Ok(Box::pin(file) as ObjectReader)
        }
        .await;
        self.forget(result).await
    }

    /// Writes to `<path>.part` and moves it to `path` once it is whole, so a stream that
    /// fails midway (the export's download, the connection, the Lambda's timeout) leaves no
    /// truncated file where the client picks files up; the `.part` is removed when the
    /// connection still allows it, and the retry writes the file again. SFTP v3 renames only
    /// to a free name, so an older `path` is removed just before the rename: a failure
    /// between the two leaves no file at `path` until the retry, never a partial one.
    async fn write_stream(&self, path: &str, mut body: ObjectReader) -> Result<u64, StepError> {
        let result = async {
            let session = self.session().await?;
            let part = format!("{path}.part");
            let written: Result<u64, StepError> = async {
                let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
                let mut file =
                    (session.open_with_flags(&part, flags).await).map_err(|e| failed("open", e))?;
                let written = tokio::io::copy(&mut body, &mut file)
                    .await
                    .map_err(|e| failed("write", e))?;
                file.shutdown().await.map_err(|e| failed("close", e))?;
                Ok(written)
            }
            .await;
            if written.is_err() {
                // Best effort: the write's error is the one to report.
                let _ = session.remove_file(&part).await;
            }
            let written = written?;
            match session.remove_file(path).await {
                Err(russh_sftp::client::error::Error::Status(status))
                    if status.status_code == StatusCode::NoSuchFile => {}
                removed => removed.map_err(|e| failed("remove", e))?,
            }
            (session.rename(&part, path).await).map_err(|e| failed("rename", e))?;
            Ok(written)
        }
        .await;
        self.forget(result).await
    }

    async fn write(&self, path: &str, body: Bytes) -> Result<(), StepError> {
        let body: ObjectReader = Box::pin(std::io::Cursor::new(body));
        self.write_stream(path, body).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKO0L4GsnyX/A4gcRKjgWz6IO6yX8a9SFx8YkTwyQDnq test";

    #[test]
    fn host_keys_are_checked_by_sha256_fingerprint() {
        let key = russh::keys::parse_public_key_base64(KEY.split(' ').nth(1).unwrap()).unwrap();
        let printed = key.fingerprint(HashAlg::Sha256).to_string();
        assert!(printed.starts_with("SHA256:"), "{printed}");
        assert!(fingerprint_matches(&key, &printed));
        assert!(!fingerprint_matches(
            &key,
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        ));
    }

    #[test]
    fn secrets_need_a_password_or_a_key() {
        let config = SftpConfig {
            host: "h".into(),
            port: 22,
            user: "u".into(),
            secret_id: "s".into(),
            host_key_sha256: "x".into(),
        };
        assert!(SftpClient::new(config.clone(), r#"{"password":"p"}"#).is_ok());
        assert!(SftpClient::new(config.clone(), "{}").is_err());
        assert!(SftpClient::new(config, "plain").is_err());
        let debug = format!(
            "{:?}",
            SftpCredentials {
                password: Some("p".into()),
                private_key: None,
                passphrase: None
            }
        );
        assert_eq!(
            debug, "SftpCredentials(redacted)",
            "the password never reaches a log"
        );
    }
}
