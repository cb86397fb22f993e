//! Lambda start-up time: process start to its first `GET /runtime/invocation/next`.
//!
//! ```sh
//! cargo run --release -p etlgen-runtime --example bench_startup -- <bootstrap> [runs]
//! ```
//!
//! A minimal Runtime API stub listens on loopback; each run spawns the Lambda binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it (plus `ETL_ENV=dev` and dummy credentials), waits
//! for the first poll, and kills it. Everything done at init (configuration, AWS clients,
//! secrets) is inside the measured time, so the binary must be configured not to need the
//! network for it. Output, one line: `runs,min_ms,median_ms,max_ms`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

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
