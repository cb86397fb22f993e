//! Lambda start-up time: process start to its first `GET /runtime/invocation/next`.
//!
//! ```sh
//! cargo run --release -p etlgen-runtime --example bench_startup -- <bootstrap> [runs]
//! ```
//!
//! A minimal Runtime API stub listens on loopback; each run spawns the Lambda binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it (plus `ETL_ENV=dev` and dummy credentials), waits
//! for the first poll, and kills it. Everything done at init (configuration, AWS clients,
//! secrets) is inside the measured time. A second loopback stub stands in for Secrets
//! Manager (`ETL__AWS__ENDPOINT_URL` points every AWS client at it): it answers every request
//! as `GetSecretValue`, with a secret that is both a Qualtrics token and an SFTP password, so
//! the steps that fetch a secret at cold start (over plain HTTP, not TLS) are measured too;
//! an `[sftp]` table is set for the SFTP poller. Output, one line: `runs,min_ms,median_ms,max_ms`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
async fn answer_secrets(mut socket: TcpStream) -> std::io::Result<()> {
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
    }
}

fn main() -> Result<(), etlgen_runtime::Error> {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .ok_or("usage: bench_startup <bootstrap> [runs]")?;
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut samples = Vec::with_capacity(runs);
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let secrets = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", secrets.local_addr()?);
        tokio::spawn(async move {
            while let Ok((socket, _)) = secrets.accept().await {
                tokio::spawn(answer_secrets(socket));
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
                .stdout(Stdio::null())
                .stderr(Stdio::null())
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
