//! Lambda start-up time: process start to its first `GET /runtime/invocation/next`.
//!
//! ```sh
//! cargo run --release -p etlgen-runtime --example bench_startup -- <bootstrap> [runs] [--tls <cert.pem> <key.pem>]
//! ```
//!
//! A minimal Runtime API stub listens on loopback; each run spawns the Lambda binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it (plus `ETL_ENV=dev` and dummy credentials), waits
//! for the first poll, and kills it. Everything done at init (configuration, AWS clients,
//! secrets) is inside the measured time. A second loopback stub stands in for Secrets
//! Manager (`ETL__AWS__ENDPOINT_URL` points every AWS client at it): it answers every request
//! as `GetSecretValue`, with a secret that is both a Qualtrics token and an SFTP password, so
//! the steps that fetch a secret at cold start are measured too; an `[sftp]` table is set for
//! the SFTP poller. Output, one line: `runs,min_ms,median_ms,max_ms`.
//!
//! With `--tls`, the Secrets Manager stub speaks HTTPS with the given certificate (a leaf,
//! not a CA, for `IP:127.0.0.1`), so the measured start-up includes a real TLS handshake and
//! certificate check. The Lambda trusts it through `ETL__TLS__EXTRA_CA_FILE`, on top of its
//! default store, the bundled roots. With `ETL__TLS__ROOTS=platform` in this process's
//! environment (the Lambda inherits it) the Lambda reads the machine's store instead, and
//! `SSL_CERT_FILE` is then a copy of this process's (which must then be set) with the
//! certificate appended, so that store is the machine's, one certificate longer. Build the Lambda as a generated
//! repository does (`AWS_LC_SYS_NO_JITTER_ENTROPY=1`, which this workspace's
//! `.cargo/config.toml` sets too): with CPU-jitter entropy, aws-lc spends tens of
//! milliseconds seeding its generator before the first handshake. `BENCH_STARTUP_LOGS=1`
//! shows the Lambda's log. A certificate that fits:
//!
//! ```sh
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
//!   -subj /CN=bench -addext subjectAltName=IP:127.0.0.1 \
//!   -addext basicConstraints=critical,CA:FALSE -keyout key.pem -out cert.pem
//! ```

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The `GetSecretValue` answer: JSON the Qualtrics client reads as a token and the SFTP
/// client as a password.
const SECRET: &str =
    r#"{"Name":"bench","SecretString":"{\"api_token\":\"bench\",\"password\":\"bench\"}"}"#;

async fn first_poll(listener: &TcpListener) -> std::io::Result<()> {
    loop {
        let (mut socket, _) = listener.accept().await?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        if request.starts_with(b"GET /2018-06-01/runtime/invocation/next") {
            return Ok(());
        }
    }
}

/// Serves one connection to the Secrets Manager stub until the client closes it.
async fn answer_secrets(mut socket: impl AsyncRead + AsyncWrite + Unpin) -> std::io::Result<()> {
    let mut buffered = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            buffered.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&buffered[..head_end]).to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffered.len() < head_end + body_len {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            buffered.extend_from_slice(&buf[..n]);
        }
        buffered.drain(..head_end + body_len);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{SECRET}",
            SECRET.len()
        );
        socket.write_all(response.as_bytes()).await?;
        // A TLS stream holds what it was given until flushed.
        socket.flush().await?;
    }
}

/// The stub's TLS: its acceptor, its certificate's file, and the platform trust bundle that
/// holds it.
struct Tls {
    acceptor: TlsAcceptor,
    cert: String,
    bundle: tempfile::NamedTempFile,
}

fn tls(cert: &str, key: &str) -> Result<Tls, etlgen_runtime::Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // Read only by a Lambda told `ETL__TLS__ROOTS=platform`.
    let platform = std::env::var("ETL__TLS__ROOTS").is_ok_and(|roots| roots == "platform");
    let mut bundle = tempfile::NamedTempFile::new()?;
    let mut text = match platform {
        true => {
            let base = std::env::var("SSL_CERT_FILE").map_err(|_| {
                "--tls with ETL__TLS__ROOTS=platform needs SSL_CERT_FILE: the system's CA \
                 bundle, to extend"
            })?;
            std::fs::read(&base).map_err(|e| format!("{base}: {e}"))?
        }
        false => Vec::new(),
    };
    text.push(b'\n');
    text.extend(std::fs::read(cert).map_err(|e| format!("{cert}: {e}"))?);
    std::io::Write::write_all(&mut bundle, &text)?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert: cert.to_owned(),
        bundle,
    })
}

fn main() -> Result<(), etlgen_runtime::Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_startup <bootstrap> [runs] [--tls <cert.pem> <key.pem>]";
    let binary = args.get(1).ok_or(usage)?;
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let tls = match args.iter().position(|a| a == "--tls") {
        Some(at) => {
            let (Some(cert), Some(key)) = (args.get(at + 1), args.get(at + 2)) else {
                return Err(usage.into());
            };
            Some(tls(cert, key)?)
        }
        None => None,
    };
    // The Lambda's own log, to see why one never polls.
    let show_logs = std::env::var_os("BENCH_STARTUP_LOGS").is_some();
    let output = || match show_logs {
        true => Stdio::inherit(),
        false => Stdio::null(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut samples = Vec::with_capacity(runs);
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let secrets = TcpListener::bind("127.0.0.1:0").await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://{}", secrets.local_addr()?);
        let acceptor = tls.as_ref().map(|tls| tls.acceptor.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = secrets.accept().await {
                // Without it Nagle holds the TLS stub's last record for the client's delayed
                // ACK (40 ms), a stall no AWS endpoint adds.
                let _ = socket.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => answer_secrets(acceptor.accept(socket).await?).await,
                        None => answer_secrets(socket).await,
                    }
                });
            }
        });
        for _ in 0..runs {
            let started = Instant::now();
            let mut child = Command::new(binary)
                .env("AWS_LAMBDA_RUNTIME_API", &address)
                .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
                .env("AWS_REGION", "eu-west-1")
                .env("AWS_ACCESS_KEY_ID", "bench")
                .env("AWS_SECRET_ACCESS_KEY", "bench")
                .env("ETL_ENV", "dev")
                .env("ETL__AWS__ENDPOINT_URL", &endpoint)
                .env("ETL__SFTP__HOST", "127.0.0.1")
                .env("ETL__SFTP__USER", "bench")
                .env("ETL__SFTP__SECRET_ID", "bench/sftp")
                .env("ETL__SFTP__HOST_KEY_SHA256", "SHA256:bench")
                .envs(tls.as_ref().map(|tls| ("SSL_CERT_FILE", tls.bundle.path())))
                .envs(
                    tls.as_ref()
                        .map(|tls| ("ETL__TLS__EXTRA_CA_FILE", &tls.cert)),
                )
                .stdout(output())
                .stderr(output())
                .spawn()?;
            let polled = tokio::time::timeout(Duration::from_secs(10), first_poll(&listener)).await;
            let elapsed = started.elapsed();
            child.kill()?;
            child.wait()?;
            polled.map_err(|_| "the Lambda never polled the Runtime API")??;
            samples.push(elapsed);
        }
        Ok::<_, etlgen_runtime::Error>(())
    })?;
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{runs},{:.2},{:.2},{:.2}",
        ms(samples[0]),
        ms(samples[runs / 2]),
        ms(samples[runs - 1])
    );
    Ok(())
}
