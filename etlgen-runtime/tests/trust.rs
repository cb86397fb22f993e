//! `[tls]` against a real TLS server on loopback: the bundled roots refuse a private CA and
//! the error says what to configure, also at cold start; `extra_ca_file` is trusted with
//! either store; a bad file fails the cold start with its path.

use std::ffi::OsStr;
use std::sync::Arc;

use etlgen_runtime::aws::trust::{self, TrustError, UNTRUSTED_CERTIFICATE};
use etlgen_runtime::aws::{S3, https_client_trusting, sdk_defaults, services};
use etlgen_runtime::config::{Config, TlsConfig, TrustRoots};
use etlgen_runtime::ports::{ObjectStore, QualtricsApi};
use etlgen_runtime::qualtrics::{ApiRequest, Client, endpoint};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A self-signed certificate for `127.0.0.1` and `localhost`, valid from 2000 to 2126. No
/// public store holds it, so it stands for a private CA's.
const CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tls-localhost.pem"
);
const KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tls-localhost-key.pem"
);

/// An HTTPS server on loopback with the fixture certificate, answering every request
/// `200 {"result":{},"meta":{}}`; its base URL.
async fn https_server() -> String {
    let chain = CertificateDer::pem_file_iter(CERT)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(KEY).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"result":{},"meta":{"httpStatus":"200 - OK"}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    url
}

fn tls(roots: TrustRoots, extra: Option<&str>) -> TlsConfig {
    TlsConfig {
        roots,
        extra_ca_file: extra.map(Into::into),
    }
}

#[tokio::test]
async fn the_bundled_roots_refuse_a_private_ca_and_the_error_says_what_to_configure() {
    let url = https_server().await;
    let http = https_client_trusting(&TlsConfig::default()).unwrap();
    let err = http.get(&url).send().await.unwrap_err();
    assert!(trust::is_untrusted_issuer(&err), "{err:?}");

    // The Qualtrics client's error, as a step's log shows it.
    let config = Config::from_toml(
        "test",
        &format!(
            "[pipeline]\nname='p'\ndata_bucket='b'\n[qualtrics]\ndatacenter='fra1'\n\
             secret_id='s'\nbase_url='{url}/API/v3/'\nmax_retries=0\n"
        ),
    )
    .unwrap();
    let qualtrics = Client::with_http(config.qualtrics.as_ref().unwrap(), "tok", http).unwrap();
    let err = qualtrics
        .send(ApiRequest::get(
            endpoint::LIST_MAILING_LISTS,
            "directories/POOL_1/mailinglists",
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(UNTRUSTED_CERTIFICATE), "{err}");
    assert!(err.to_string().contains("[tls] extra_ca_file"), "{err}");

    // The AWS SDK's error, through the same client, as the runner logs a failed message.
    let http = https_client_trusting(&TlsConfig::default()).unwrap();
    let sdk = sdk_defaults(&http)
        .endpoint_url(&url)
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "key", "secret", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let s3 = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    let Err(err) = S3(aws_sdk_s3::Client::from_conf(s3))
        .get("bucket", "key")
        .await
    else {
        panic!("an untrusted server answered");
    };
    assert!(err.is_retryable(), "{err}");
    let line = err.chain().to_string();
    assert!(line.contains(UNTRUSTED_CERTIFICATE), "{line}");
    assert!(
        line.starts_with("retryable error: GetObject s3://bucket/key"),
        "{line}"
    );
}

#[tokio::test]
async fn an_extra_ca_file_is_trusted_with_either_store() {
    let url = https_server().await;
    for roots in [TrustRoots::Bundled, TrustRoots::Platform] {
        let http = https_client_trusting(&tls(roots, Some(CERT))).unwrap();
        let answer = http.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{roots:?}");
        let body = answer.text().await.unwrap();
        assert!(body.contains("200 - OK"), "{roots:?}: {body}");
    }
}

/// Set in a test's child process.
const CHILD: &str = "ETLGEN_TRUST_TEST_CHILD";

/// Runs `test` again in a child process of this test binary with `envs` set, and checks that
/// it passed there; true in the child, which then runs the test's body. Environment variables
/// are the process's, so a test that needs some set runs in a process of its own.
fn in_child(test: &str, envs: &[(&str, &OsStr)]) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads", "1", "--nocapture"])
        .env(CHILD, "1")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && out.contains("1 passed"),
        "{out}{}",
        String::from_utf8_lossy(&child.stderr)
    );
    false
}

/// The bundled roots ignore `SSL_CERT_FILE`; the platform store reads it. The check runs in a
/// child process that has it set to the fixture, with an empty `SSL_CERT_DIR`.
#[tokio::test]
async fn only_the_platform_store_reads_ssl_cert_file() {
    let empty = tempfile::tempdir().unwrap();
    let envs = [
        ("SSL_CERT_FILE", OsStr::new(CERT)),
        ("SSL_CERT_DIR", empty.path().as_os_str()),
    ];
    if !in_child("only_the_platform_store_reads_ssl_cert_file", &envs) {
        return;
    }
    let url = https_server().await;
    let bundled = https_client_trusting(&TlsConfig::default()).unwrap();
    let err = bundled.get(&url).send().await.unwrap_err();
    assert!(trust::is_untrusted_issuer(&err), "{err:?}");
    let platform = https_client_trusting(&tls(TrustRoots::Platform, None)).unwrap();
    let answer = platform.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[test]
fn the_bundled_roots_hold_the_roots_aws_endpoints_chain_to() {
    let config = trust::bundled_config(Vec::new()).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    let subjects: Vec<&[u8]> = webpki_roots::TLS_SERVER_ROOTS
        .iter()
        .map(|anchor| anchor.subject.as_ref())
        .collect();
    for name in [
        "Amazon Root CA 1",
        "Amazon Root CA 3",
        "Starfield Services Root",
    ] {
        assert!(
            subjects
                .iter()
                .any(|s| s.windows(name.len()).any(|w| w == name.as_bytes())),
            "{name} is not among the bundled roots"
        );
    }
}

#[test]
fn a_bad_extra_ca_file_names_the_setting_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_x509 = dir.path().join("not-x509.pem");
    std::fs::write(
        &not_x509,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases = [
        (missing.clone(), "cannot read it"),
        (KEY.into(), "holds no certificate"),
        (garbage.clone(), "not valid PEM"),
        (not_x509.clone(), "certificate 1 is not valid X.509"),
    ];
    for (path, why) in cases {
        let config = TlsConfig {
            roots: TrustRoots::Bundled,
            extra_ca_file: Some(path.clone()),
        };
        let err = https_client_trusting(&config).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("[tls] extra_ca_file ")
                && text.contains(&path.display().to_string())
                && text.contains(why),
            "{text}"
        );
        assert!(matches!(
            err,
            TrustError::Read { .. } | TrustError::NotCertificates { .. }
        ));
    }
}

#[tokio::test]
async fn a_bad_extra_ca_file_fails_the_cold_start() {
    let config = Config::from_toml(
        "test",
        "[pipeline]\nname='p'\ndata_bucket='b'\n[aws]\nregion='eu-west-1'\n\
         endpoint_url='http://127.0.0.1:9'\n[tls]\nextra_ca_file='/nonexistent/ca.pem'\n",
    )
    .unwrap();
    let needs = etlgen_runtime::aws::Needs {
        qualtrics: false,
        sftp: false,
    };
    let Err(err) = services(&config, needs).await else {
        panic!("the cold start succeeded with a missing extra_ca_file");
    };
    let text = err.to_string();
    assert!(
        text.contains("[tls] extra_ca_file /nonexistent/ca.pem"),
        "{text}"
    );
}

/// A Qualtrics step fetches its secret at cold start: from a server it does not trust, the
/// cold start fails, and the line the Lambda logs says what to configure.
#[tokio::test]
async fn an_untrusted_secrets_endpoint_fails_the_cold_start_with_the_advice() {
    // `services` takes credentials from the environment, as a Lambda does: a child process
    // gets fixed ones, and no profile or instance metadata to look for.
    let envs = [
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ]
    .map(|(name, value)| (name, OsStr::new(value)));
    if !in_child(
        "an_untrusted_secrets_endpoint_fails_the_cold_start_with_the_advice",
        &envs,
    ) {
        return;
    }
    let url = https_server().await;
    let config = Config::from_toml(
        "test",
        &format!(
            "[pipeline]\nname='p'\ndata_bucket='b'\n[aws]\nregion='eu-west-1'\n\
             endpoint_url='{url}'\n[qualtrics]\ndatacenter='fra1'\nsecret_id='p/qualtrics'\n"
        ),
    )
    .unwrap();
    let needs = etlgen_runtime::aws::Needs {
        qualtrics: true,
        sftp: false,
    };
    let Err(err) = services(&config, needs).await else {
        panic!("the cold start trusted an unknown issuer");
    };
    let line = etlgen_runtime::error::chain(err.as_ref()).to_string();
    assert!(line.contains("p/qualtrics"), "{line}");
    assert!(line.contains(UNTRUSTED_CERTIFICATE), "{line}");
}
