//! Which certificate authorities a step's HTTPS client trusts: `[tls]`.
//!
//! By default, Mozilla's root certificates compiled into the binary (the `webpki-roots`
//! crate, kept by the rustls project), not the platform's store. Trusting the platform's store
//! means reading and parsing every certificate of the CA bundle at each cold start, and of
//! `SSL_CERT_DIR` when it is set: on a machine whose certificate directory holds a few hundred
//! files, that was about a third of a Qualtrics step's start-up (`docs/benchmarks.md`).
//! Compiled-in roots cost no I/O and no parsing, and every environment (a laptop, CI, Lambda)
//! trusts the same ones, so a certificate that verifies in a test verifies in production.
//! AWS's endpoints chain to Amazon's and Starfield's roots, and the Qualtrics API, which
//! browsers call too, to a publicly trusted one. The roots change when the lock file's
//! `webpki-roots` does, which an etlgen update brings.
//!
//! `roots = "platform"` trusts the platform's store instead, as reqwest does by default, and
//! `extra_ca_file` adds the certificates of a PEM file to either store: a private CA, or the
//! one a TLS-inspecting egress firewall signs with. Tools on an engineer's machine (the
//! xtask) keep the platform's store ([`super::https_client`]), where a corporate CA lives.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{TlsConfig, TrustRoots};

/// What to do when a server's certificate chains to no trusted root, appended to the
/// transport error.
pub const UNTRUSTED_CERTIFICATE: &str = "the server's certificate chains to no root the step \
     trusts: a step trusts [tls] roots (Mozilla's, compiled in, unless roots = \"platform\"); \
     to trust a private or TLS-inspecting CA, name its PEM file in [tls] extra_ca_file";

/// Why `[tls]` could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The extra CA file could not be read.
    #[error(
        "[tls] extra_ca_file {}: cannot read it ({source}); give the absolute path of a PEM \
         file of CA certificates",
        path.display()
    )]
    Read {
        /// The configured path.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The extra CA file is not PEM certificates.
    #[error(
        "[tls] extra_ca_file {}: {reason}; it must hold PEM certificates \
         (-----BEGIN CERTIFICATE-----)",
        path.display()
    )]
    NotCertificates {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTPS client could not be built with the trust store.
    #[error("cannot build the HTTPS client: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The certificates of `[tls] extra_ca_file`: none when it is unset. Each one is parsed here,
/// so a bad file fails the cold start with its path, whichever store is used. Any certificate
/// is taken as a root, a CA's or a server's own self-signed one, as webpki takes it.
pub fn extra_roots(tls: &TlsConfig) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let Some(path) = &tls.extra_ca_file else {
        return Ok(Vec::new());
    };
    let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.clone(),
        source,
    })?;
    let not_certificates = |reason: String| TrustError::NotCertificates {
        path: path.clone(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_certificates(format!("it is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(not_certificates("it holds no certificate".into()));
    }
    let mut check = rustls::RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        check.add(cert.clone()).map_err(|e| {
            not_certificates(format!("certificate {} is not valid X.509 ({e})", n + 1))
        })?;
    }
    Ok(certs)
}

/// The TLS configuration of `roots = "bundled"`: Mozilla's roots and `extra`, aws-lc-rs,
/// TLS 1.3 and 1.2, and HTTP/1.1 by ALPN (what reqwest configures for its own store).
pub fn bundled_config(
    extra: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, TrustError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // `extra_roots` has parsed each one already.
    roots.add_parsable_certificates(extra);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Client(e.into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Applies `[tls]` to a reqwest builder.
pub fn trusting(
    builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, TrustError> {
    let extra = extra_roots(tls)?;
    Ok(match tls.roots {
        TrustRoots::Bundled => builder.tls_backend_preconfigured(bundled_config(extra)?),
        TrustRoots::Platform => builder.tls_certs_merge(
            extra
                .iter()
                .map(|cert| reqwest::Certificate::from_der(cert))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TrustError::Client(e.into()))?,
        ),
    })
}

/// Whether `error`, or an error that caused it, is a server certificate rustls refused for
/// want of a trusted issuer: what [`UNTRUSTED_CERTIFICATE`] explains. Other refusals (an
/// expired certificate, or one for another name: a wrong endpoint) say so themselves.
///
/// `std::io::Error::source` skips the error it wraps, and a TLS failure reaches reqwest
/// wrapped in one, so the wrapped error is looked into as well.
pub fn is_untrusted_issuer(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) =
            e.downcast_ref::<rustls::Error>()
        {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && is_untrusted_issuer(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}
