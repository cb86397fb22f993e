//! One trust store per Lambda, read once and shared by its two HTTPS clients.
//!
//! The AWS SDK's client and reqwest (the Qualtrics client) each read the system's trust
//! store when they are built: the bundle file and, where OpenSSL keeps one, the hashed
//! certificate directory, a file per certificate (about 290 on a Debian machine). For a step
//! that fetches its Qualtrics secret at cold start that was the largest part of its start-up,
//! done twice. Here it is read once, with rustls-native-certs as both clients read it (so
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured as before), and each client is given the
//! result. The bundle and the directory hold the same certificates, so repeats are dropped,
//! and so is any certificate rustls cannot use as a root, as both clients dropped them.

use std::sync::LazyLock;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;

/// Trusted root certificates, each once, each one rustls accepts as a trust anchor.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    certs: Vec<CertificateDer<'static>>,
}

static SYSTEM: LazyLock<Roots> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "a CA certificate of the system trust store could not be read");
    }
    let roots = Roots::new(loaded.certs);
    if roots.is_empty() {
        tracing::warn!(
            "no CA certificates found in the system trust store; set SSL_CERT_FILE to a PEM bundle"
        );
    }
    roots
});

/// The system's trust store, read on first use and kept for the life of the process.
pub fn system() -> &'static Roots {
    &SYSTEM
}

impl Roots {
    /// Keeps each distinct certificate that rustls accepts as a root.
    pub fn new(certs: impl IntoIterator<Item = CertificateDer<'static>>) -> Self {
        let mut certs: Vec<_> = certs
            .into_iter()
            .filter(|cert| rustls::RootCertStore::empty().add(cert.clone()).is_ok())
            .collect();
        certs.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        certs.dedup();
        Self { certs }
    }

    /// How many roots there are.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The roots as one PEM bundle, the form the AWS SDK's `TrustStore` takes.
    pub fn pem(&self) -> Vec<u8> {
        let mut pem = Vec::new();
        for cert in &self.certs {
            pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            for line in text.as_bytes().chunks(64) {
                pem.extend_from_slice(line);
                pem.push(b'\n');
            }
            pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
        pem
    }

    /// The roots as reqwest takes them.
    pub fn reqwest(&self) -> Result<Vec<reqwest::Certificate>, reqwest::Error> {
        self.certs
            .iter()
            .map(|cert| reqwest::Certificate::from_der(cert.as_ref()))
            .collect()
    }

    /// The AWS SDK's HTTPS client, as `aws-config` builds it by default (rustls with
    /// aws-lc, the proxy from the environment) but trusting these roots.
    pub fn aws_http_client(
        &self,
    ) -> Result<aws_sdk_s3::config::SharedHttpClient, aws_smithy_http_client::HttpClientError> {
        use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
        use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};

        let trust = TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(self.pem());
        let context = TlsContext::builder().with_trust_store(trust).build()?;
        Ok(
            Builder::new().build_with_connector_fn(move |settings, components| {
                let mut connector = ConnectorBuilder::default()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .tls_context(context.clone());
                connector.set_connector_settings(settings.cloned());
                if let Some(components) = components {
                    connector.set_sleep_impl(components.sleep_impl());
                }
                connector.set_proxy_config(Some(ProxyConfig::from_env()));
                connector.build()
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject as _;

    use super::*;

    /// Two public roots (ISRG Root X2, GTS Root R4), so the tests do not depend on the
    /// machine's trust store.
    const PUBLIC_ROOTS: &str = "\
-----BEGIN CERTIFICATE-----
MIICGzCCAaGgAwIBAgIQQdKd0XLq7qeAwSxs6S+HUjAKBggqhkjOPQQDAzBPMQsw
CQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJuZXQgU2VjdXJpdHkgUmVzZWFyY2gg
R3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBYMjAeFw0yMDA5MDQwMDAwMDBaFw00
MDA5MTcxNjAwMDBaME8xCzAJBgNVBAYTAlVTMSkwJwYDVQQKEyBJbnRlcm5ldCBT
ZWN1cml0eSBSZXNlYXJjaCBHcm91cDEVMBMGA1UEAxMMSVNSRyBSb290IFgyMHYw
EAYHKoZIzj0CAQYFK4EEACIDYgAEzZvVn4CDCuwJSvMWSj5cz3es3mcFDR0HttwW
+1qLFNvicWDEukWVEYmO6gbf9yoWHKS5xcUy4APgHoIYOIvXRdgKam7mAHf7AlF9
ItgKbppbd9/w+kHsOdx1ymgHDB/qo0IwQDAOBgNVHQ8BAf8EBAMCAQYwDwYDVR0T
AQH/BAUwAwEB/zAdBgNVHQ4EFgQUfEKWrt5LSDv6kviejM9ti6lyN5UwCgYIKoZI
zj0EAwMDaAAwZQIwe3lORlCEwkSHRhtFcP9Ymd70/aTSVaYgLXTWNLxBo1BfASdW
tL4ndQavEi51mI38AjEAi/V3bNTIZargCyzuFJ0nN6T5U6VR5CmD1/iQMVtCnwr1
/q4AaOeMSQ+2b1tbFfLn
-----END CERTIFICATE-----
-----BEGIN CERTIFICATE-----
MIICCTCCAY6gAwIBAgINAgPlwGjvYxqccpBQUjAKBggqhkjOPQQDAzBHMQswCQYD
VQQGEwJVUzEiMCAGA1UEChMZR29vZ2xlIFRydXN0IFNlcnZpY2VzIExMQzEUMBIG
A1UEAxMLR1RTIFJvb3QgUjQwHhcNMTYwNjIyMDAwMDAwWhcNMzYwNjIyMDAwMDAw
WjBHMQswCQYDVQQGEwJVUzEiMCAGA1UEChMZR29vZ2xlIFRydXN0IFNlcnZpY2Vz
IExMQzEUMBIGA1UEAxMLR1RTIFJvb3QgUjQwdjAQBgcqhkjOPQIBBgUrgQQAIgNi
AATzdHOnaItgrkO4NcWBMHtLSZ37wWHO5t5GvWvVYRg1rkDdc/eJkTBa6zzuhXyi
QHY7qca4R9gq55KRanPpsXI5nymfopjTX15YhmUPoYRlBtHci8nHc8iMai/lxKvR
HYqjQjBAMA4GA1UdDwEB/wQEAwIBhjAPBgNVHRMBAf8EBTADAQH/MB0GA1UdDgQW
BBSATNbrdP9JNqPV2Py1PsVq8JQdjDAKBggqhkjOPQQDAwNpADBmAjEA6ED/g94D
9J+uHXqnLrmvT/aDHQ4thQEd0dlq7A/Cr8deVl5c1RxYIigL9zC2L7F8AjEA8GE8
p/SgguMh1YQdc4acLa/KNJvxn7kjNuK8YAOdgLOaVsjh4rsUecrNIdSUtUlD
-----END CERTIFICATE-----
";

    fn public_roots() -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(PUBLIC_ROOTS.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn repeats_and_certificates_rustls_refuses_are_dropped() {
        let [x2, r4] = <[_; 2]>::try_from(public_roots()).unwrap();
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let roots = Roots::new([x2.clone(), garbage, r4.clone(), x2.clone()]);
        assert_eq!(roots.len(), 2);
        assert!(roots.certs.contains(&x2) && roots.certs.contains(&r4));
    }

    /// The SDK parses the bundle with `pem_slice_iter` and adds each certificate to a
    /// `RootCertStore`, failing (with a panic) on one it cannot add: every root must
    /// survive the trip, for these roots and for whatever this machine trusts.
    #[test]
    fn the_pem_bundle_gives_back_every_root() {
        for roots in [&Roots::new(public_roots()), system()] {
            let pem = roots.pem();
            let back = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            assert_eq!(back, roots.certs);
            let mut store = rustls::RootCertStore::empty();
            for cert in back {
                store.add(cert).unwrap();
            }
            assert_eq!(store.len(), roots.len());
            assert_eq!(roots.reqwest().unwrap().len(), roots.len());
        }
        assert_eq!(Roots::new(public_roots()).len(), 2);
    }

    #[test]
    fn no_roots_give_an_empty_bundle() {
        let roots = Roots::default();
        assert!(roots.pem().is_empty());
        assert!(roots.reqwest().unwrap().is_empty());
    }
}
