//! Validator throughput and peak memory, beside the raw `csv` crate on the same file.
//!
//! ```sh
//! cargo run --release -p etlgen-runtime --example bench_validator -- <csv|validator|validator-dedup|validator-dedup-email|validator-dedup-disk|validator-no-output|validator-records> <MB> [dir]
//! ```
//!
//! Each run measures one mode and one size in a fresh process, because peak RSS (`VmHWM`)
//! only grows. The input is generated once per size into `dir` (the system temp directory
//! by default) and reused. The object store is the local file system, and the raw-zone copy
//! is a hard link, as S3's server-side copy costs the Lambda nothing either. Output, one CSV
//! line: `mode,size_mb,rows,seconds,mb_per_s,peak_rss_mib`. The validator's own log lines go
//! to stderr (a handful a run), among them how many rows dedup past its memory left for later
//! (`waited_for_dedup`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use etlgen_runtime::config::Config;
use etlgen_runtime::kinds::validator::{Hooks, Source, Validator};
use etlgen_runtime::kinds::{Output, RecordBatch};
use etlgen_runtime::ports::{
    ObjectReader, ObjectStore, OutgoingMessage, Queue, Services, Unconfigured,
};
use etlgen_runtime::runner::Runner;
use etlgen_runtime::testing::{MemoryNotifications, sqs_event};
use etlgen_runtime::{Envelope, LogicalDate, RunId, StepError};

#[derive(Debug, Default)]
struct Defaults;
impl Hooks for Defaults {}

/// Drops every batch: reading and checking without building the messages. Overriding
/// `choose_output` makes the validator build each batch's `Record`s for it.
#[derive(Debug, Default)]
struct NoOutput;
impl Hooks for NoOutput {
    fn choose_output(&self, _: RecordBatch, _: u64) -> Vec<Output<RecordBatch>> {
        Vec::new()
    }
}

/// Overrides `validate_row` with the default check: every row is a `Record`, as for any
/// client that overrides a row hook.
#[derive(Debug, Default)]
struct RowsAsRecords;
impl Hooks for RowsAsRecords {
    fn validate_row(
        &self,
        row: &mut etlgen_runtime::kinds::Record,
        settings: &etlgen_runtime::kinds::validator::Settings,
    ) -> Result<(), String> {
        etlgen_runtime::kinds::validator::validate_row(row, settings)
    }
}

/// Objects as files under `root/<bucket>/<key>`.
struct LocalStore(PathBuf);

impl LocalStore {
    fn path(&self, bucket: &str, key: &str) -> PathBuf {
        self.0.join(bucket).join(key)
    }
}

fn io(e: std::io::Error) -> StepError {
    StepError::retryable(e.to_string())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<ObjectReader>, StepError> {
        match std::fs::File::open(self.path(bucket, key)) {
            // Buffered like a network body: tokio's file I/O hops to a blocking thread per read.
            Ok(file) => Ok(Some(Box::pin(tokio::io::BufReader::with_capacity(
                1 << 20,
                tokio::fs::File::from_std(file),
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), StepError> {
        let path = self.path(bucket, key);
        std::fs::create_dir_all(path.parent().unwrap()).map_err(io)?;
        std::fs::write(path, body).map_err(io)
    }

    async fn put_if_absent(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool, StepError> {
        if self.path(bucket, key).exists() {
            return Ok(false);
        }
        self.put(bucket, key, body).await.map(|()| true)
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        _: Option<&str>,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<(), StepError> {
        // The benchmark's files have one version each.
        let to = self.path(to_bucket, to_key);
        std::fs::create_dir_all(to.parent().unwrap()).map_err(io)?;
        let _ = std::fs::remove_file(&to);
        std::fs::hard_link(self.path(from_bucket, from_key), to).map_err(io)
    }

    async fn list(&self, _: &str, _: &str) -> Result<Vec<String>, StepError> {
        Ok(Vec::new())
    }
}

/// Counts what would be sent.
#[derive(Default)]
struct CountingQueue(AtomicU64);

#[async_trait]
impl Queue for CountingQueue {
    async fn send_batch(&self, _: &str, messages: Vec<OutgoingMessage>) -> Result<(), StepError> {
        self.0.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn generate(path: &Path, megabytes: u64) -> std::io::Result<()> {
    if path.metadata().is_ok_and(|m| m.len() >= megabytes << 20) {
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().unwrap())?;
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "id,email,first_name,last_name,visited,score")?;
    let (mut written, mut i) = (0u64, 0u64);
    while written < megabytes << 20 {
        let line = format!(
            "{i},person{i}@example.com,First{},Last{},2024-05-{:02},{}\n",
            i % 97,
            i % 89,
            i % 28 + 1,
            i % 11
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    out.flush()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

const CONFIG: &str = r#"
[pipeline]
name = "bench"
data_bucket = "data"
[steps.validate]
next_queue_url = "https://sqs.test/next"
next_step = "load"
batch_size = 100
columns = [
  { name = "id", type = "integer", required = true },
  { name = "email", type = "email", required = true },
  { name = "visited", type = "date" },
  { name = "score", type = "integer" },
]
"#;

fn main() -> Result<(), etlgen_runtime::Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let mode = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("validator")
        .to_owned();
    let megabytes: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let root = args
        .get(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("etlgen-bench"));
    let input = root
        .join("landing")
        .join(format!("input-{megabytes}mb.csv"));
    generate(&input, megabytes)?;
    let bytes = input.metadata()?.len();

    let started = Instant::now();
    let rows = match mode.as_str() {
        "csv" => {
            let mut reader = csv::Reader::from_path(&input)?;
            let mut record = csv::StringRecord::new();
            let mut rows = 0u64;
            while reader.read_record(&mut record)? {
                rows += 1;
            }
            rows
        }
        "validator"
        | "validator-dedup"
        | "validator-dedup-email"
        | "validator-dedup-disk"
        | "validator-no-output"
        | "validator-records" => {
            let mut toml = CONFIG.to_owned();
            // The integer `id` is converted before it is hashed; a text key, as the generated
            // default `external_id` is, is hashed as read.
            match mode.as_str() {
                "validator-dedup" => toml.push_str("primary_key = \"id\"\n"),
                "validator-dedup-email" => toml.push_str("primary_key = \"email\"\n"),
                // No key held in memory: every row takes the path of a file whose keys
                // outgrow the budget (a filter, and the rows it cannot decide held on disk).
                "validator-dedup-disk" => {
                    toml.push_str("primary_key = \"email\"\ndedup_memory_kb = 0\n");
                }
                _ => {}
            }
            let queue = Arc::new(CountingQueue::default());
            let services = Services {
                qualtrics: Arc::new(Unconfigured("qualtrics")),
                objects: Arc::new(LocalStore(root.clone())),
                queue: queue.clone(),
                notifications: Arc::new(MemoryNotifications::default()),
                sftp: Arc::new(Unconfigured("sftp")),
            };
            let config = Config::from_toml("bench", &toml)?;
            let source = Source::Object {
                bucket: "landing".into(),
                key: format!("input-{megabytes}mb.csv"),
                version_id: None,
            };
            let run_id = format!("bench-{}", std::process::id());
            let run = RunId::new(run_id.clone());
            let envelope = Envelope::new(
                "bench",
                run,
                LogicalDate::from_ymd(2024, 5, 1)?,
                "validate",
                "file",
                source,
            );
            let body = envelope.to_json()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let event = sqs_event(&[&body]);
            let response = if mode == "validator-no-output" {
                let runner = Runner::<Validator<NoOutput>>::new("validate", config, services)?;
                runtime.block_on(runner.handle_event(event))
            } else if mode == "validator-records" {
                let runner = Runner::<Validator<RowsAsRecords>>::new("validate", config, services)?;
                runtime.block_on(runner.handle_event(event))
            } else {
                let runner = Runner::<Validator<Defaults>>::new("validate", config, services)?;
                runtime.block_on(runner.handle_event(event))
            };
            if !response.batch_item_failures.is_empty() {
                return Err("the validator failed".into());
            }
            let manifest = std::fs::read_to_string(
                root.join("data")
                    .join(format!("runs/2024-05-01/{run_id}/manifest.json")),
            )?;
            let manifest: etlgen_runtime::kinds::RunManifest = serde_json::from_str(&manifest)?;
            manifest.valid + manifest.rejected
        }
        other => {
            let modes = "csv, validator, validator-dedup, validator-dedup-email, \
                validator-no-output or validator-records";
            return Err(format!("unknown mode {other}: {modes}").into());
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mb = bytes as f64 / (1 << 20) as f64;
    println!(
        "{mode},{megabytes},{rows},{seconds:.3},{:.1},{:.1}",
        mb / seconds,
        peak_rss_mib()
    );
    Ok(())
}
