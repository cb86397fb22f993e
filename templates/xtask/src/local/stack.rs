//! `local up`, `status`, `faults` and `down`: starting and stopping the local stack, and the
//! state file (`.local/state.json`) that says what is running.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use etlgen_runtime::local::aws_sdk_secretsmanager;
use etlgen_runtime::local::lambda::AwsTarget;
use etlgen_runtime::local::qualtrics::Faults;
use serde::{Deserialize, Serialize};

use super::outputs::{Outputs, terraform};
use super::processes::{alive, free_port, spawn_moto, spawn_serve, stop_processes, wait_for};
use crate::package::{Arch, Builder, Package};

/// The folder of the local stack, at the workspace root.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .join(".local")
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_owned()
}

/// The Terraform root module of the local environment.
pub fn env_dir() -> PathBuf {
    root().join("infra/envs/local")
}

/// What is running, written by `up` and read by every other command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The AWS emulator.
    pub aws_endpoint: String,
    /// The region of the stack.
    pub region: String,
    /// The AWS emulator's process, when `up` started it.
    pub moto_pid: Option<u32>,
    /// The `serve` process.
    pub serve_pid: Option<u32>,
    /// `serve`'s control API (`GET /status`, `POST /shutdown`).
    pub control_url: String,
    /// The Qualtrics API origin the Lambdas call.
    pub qualtrics_url: String,
    /// Whether `serve` runs the mock Qualtrics API, on this port.
    pub mock_qualtrics_port: Option<u16>,
    /// The mock's faults at start.
    pub faults: Faults,
    /// Each function's `bootstrap`, by function name.
    pub bootstrap: BTreeMap<String, PathBuf>,
    /// Variables set over every function's own.
    pub environment: BTreeMap<String, String>,
    /// How soon a failed message is retried, in seconds.
    pub retry_delay_seconds: u64,
    /// Where a run's file goes for an SFTP source (the local SFTP server's folder).
    pub sftp_dir: Option<PathBuf>,
    /// The local SFTP server (`sshd`), when `up` started it.
    #[serde(default)]
    pub sftp_pid: Option<u32>,
}

/// The event source mappings the Lambda emulator took over (disabled in the AWS emulator),
/// written by `serve` alone to `.local/taken-over.json`, so a restarted `serve` polls them
/// again.
pub fn taken_over() -> BTreeSet<String> {
    fs::read_to_string(dir().join("taken-over.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Records the mappings `serve` took over.
pub fn save_taken_over(uuids: &BTreeSet<String>) -> Result<()> {
    write_atomically(&dir().join("taken-over.json"), &serde_json::to_vec_pretty(uuids)?)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place, so a
/// reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("json.tmp");
    fs::write(&temporary, bytes).with_context(|| format!("writing {}", temporary.display()))?;
    fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))
}

impl State {
    /// The AWS emulator as the SDK sees it.
    pub fn aws(&self) -> AwsTarget {
        AwsTarget { endpoint_url: self.aws_endpoint.clone(), region: self.region.clone() }
    }

    /// Reads `.local/state.json`.
    pub fn load() -> Result<State> {
        let path = dir().join("state.json");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "the local stack is not up ({} is missing): run `cargo xtask local up`",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Writes `.local/state.json` (only `up` does).
    fn save(&self) -> Result<()> {
        write_atomically(&dir().join("state.json"), &serde_json::to_vec_pretty(self)?)
    }
}

/// `cargo xtask local up`.
#[derive(Debug, clap::Args)]
pub struct Up {
    /// An AWS emulator that is already running (moto, LocalStack) [default: start
    /// `moto_server` on a free loopback port; set MOTO_SERVER to its path if it is not on
    /// PATH].
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// A Qualtrics API origin to call instead of the mock (for example a sandbox brand).
    #[arg(long, value_name = "URL")]
    qualtrics: Option<String>,
    /// The token the Lambdas send to `--qualtrics` (stored in the local secret).
    #[arg(
        long,
        env = "QUALTRICS_API_TOKEN",
        default_value = "local-token",
        hide_env_values = true
    )]
    qualtrics_token: String,
    /// Faults for the mock Qualtrics API (a TOML file; see docs/local.md).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Seconds before a failed message is delivered again (AWS waits for the visibility
    /// timeout).
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    retry_delay: u64,
    /// For an SFTP source: the folder an SFTP server of your own serves, where `run` puts
    /// files [default: start OpenSSH's sshd on a free loopback port, serving
    /// .local/sftp/inbox].
    #[arg(long, value_name = "DIR")]
    sftp_dir: Option<PathBuf>,
    /// Extra variables for every Lambda, as KEY=VALUE (for example the local SFTP server's
    /// ETL__SFTP__HOST).
    #[arg(long = "set-env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    set_env: Vec<(String, String)>,
    /// The JSON of the SFTP secret (`{"password": …}`) of the server behind `--sftp-dir`.
    #[arg(long, env = "ETL_LOCAL_SFTP_SECRET", hide_env_values = true, requires = "sftp_dir")]
    sftp_secret: Option<String>,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{key:?} is not a variable name (letters, digits and _)"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Reads a faults file, naming the file and the field in any error.
pub fn read_faults(path: &Path) -> Result<Faults> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let faults: Faults = toml::from_str(&text)
        .with_context(|| format!("{} is not a faults file", path.display()))?;
    faults.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(faults)
}

pub async fn up(args: Up) -> Result<()> {
    ensure!(
        cfg!(target_os = "linux"),
        "the local stack runs the Lambdas' Linux binaries as processes of this machine, so it \
         needs Linux (run it in a Linux VM or container)"
    );
    let dir = dir();
    if let Ok(state) = State::load() {
        if state.serve_pid.is_some_and(alive) {
            bail!("the local stack is already up; run `cargo xtask local down` first");
        }
        // What an earlier stack left running (its serve died): stop it, then start afresh.
        stop_processes(&state).await;
    }
    let faults = match &args.faults {
        Some(path) => read_faults(path)?,
        None => Faults::default(),
    };
    if let Some(sftp_dir) = &args.sftp_dir {
        ensure!(sftp_dir.is_dir(), "--sftp-dir {} is not a folder", sftp_dir.display());
    }
    for sub in ["logs", "functions", "dist"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    let stale = dir.join("taken-over.json");
    if stale.exists() {
        fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
    }

    let arch = Arch::host()?;
    crate::package::package(&Package {
        arch,
        version: Some("local".to_owned()),
        builder: Builder::Cargo,
        out_dir: PathBuf::from(".local/dist"),
    })?;

    let mut state = State {
        aws_endpoint: String::new(),
        region: String::new(),
        moto_pid: None,
        serve_pid: None,
        control_url: String::new(),
        qualtrics_url: String::new(),
        mock_qualtrics_port: None,
        faults,
        bootstrap: BTreeMap::new(),
        environment: args.set_env.iter().cloned().collect(),
        retry_delay_seconds: args.retry_delay,
        sftp_dir: args.sftp_dir.as_ref().map(|d| d.canonicalize()).transpose()?,
        sftp_pid: None,
    };
    let started = start_stack(&args, arch, &mut state).await;
    state.save()?;
    if let Err(e) = started {
        stop_processes(&state).await;
        return Err(e);
    }
    println!("The local stack is up.");
    println!("  AWS emulator:      {}", state.aws_endpoint);
    println!("  Qualtrics API:     {}", state.qualtrics_url);
    println!("  Lambda emulator:   {}/status", state.control_url);
    if let Some(inbox) = &state.sftp_dir {
        println!("  SFTP folder:       {}", inbox.display());
    }
    println!("  logs:              {}", dir.join("logs").display());
    println!("Next: cargo xtask local run --input FILE [--logical-date YYYY-MM-DD]");
    Ok(())
}

async fn start_stack(args: &Up, arch: Arch, state: &mut State) -> Result<()> {
    let dir = dir();
    state.aws_endpoint = match &args.endpoint {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let port = free_port()?;
            let pid = spawn_moto(port, &dir.join("logs/moto.log"))?;
            state.moto_pid = Some(pid);
            format!("http://127.0.0.1:{port}")
        }
    };
    wait_for(&format!("{}/", state.aws_endpoint), "the AWS emulator", state.moto_pid).await?;

    terraform(&["init", "-input=false", "-no-color"])?;
    let dist = dir.join("dist");
    terraform(&[
        "apply",
        "-input=false",
        "-auto-approve",
        "-no-color",
        &format!("-var=aws_endpoint={}", state.aws_endpoint),
        &format!("-var=dist_dir={}", dist.display()),
        &format!("-var=architecture={}", arch.name()),
    ])?;
    let outputs = Outputs::load()?;
    state.region = outputs.region.clone();
    let mut sftp_secret = args.sftp_secret.clone();
    if let Some(entry) = outputs.entry.as_ref().filter(|e| e.source == "sftp")
        && args.sftp_dir.is_none()
    {
        let sftp = super::sftp::start(&dir.join("sftp"), &dir.join("logs/sftp.log"), &entry.step)?;
        state.sftp_pid = Some(sftp.pid);
        state.sftp_dir = Some(sftp.inbox);
        state.environment.extend(sftp.environment);
        sftp_secret = Some(sftp.secret);
        state.save()?;
    }

    for (step, info) in &outputs.steps {
        let bootstrap =
            unzip_bootstrap(&dist.join(format!("{step}.zip")), &dir.join("functions").join(step))?;
        state.bootstrap.insert(info.function_name.clone(), bootstrap);
    }

    state.qualtrics_url = match &args.qualtrics {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let port = free_port()?;
            state.mock_qualtrics_port = Some(port);
            format!("http://127.0.0.1:{port}")
        }
    };
    state
        .environment
        .insert("ETL__QUALTRICS__BASE_URL".to_owned(), format!("{}/API/v3/", state.qualtrics_url));
    put_secrets(state, &outputs, &args.qualtrics_token, sftp_secret.as_deref()).await?;

    state.control_url = format!("http://127.0.0.1:{}", free_port()?);
    state.save()?;
    state.serve_pid = Some(spawn_serve(&dir.join("logs/serve.log"))?);
    state.save()?;
    wait_for(&format!("{}/status", state.control_url), "the Lambda emulator", state.serve_pid)
        .await?;
    Ok(())
}

async fn put_secrets(
    state: &State,
    outputs: &Outputs,
    token: &str,
    sftp: Option<&str>,
) -> Result<()> {
    let sdk = state.aws().sdk_config().await?;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let values = [
        ("qualtrics", Some(serde_json::json!({ "api_token": token }).to_string())),
        ("sftp", sftp.map(str::to_owned)),
    ];
    for (name, value) in values {
        let id = outputs.secret_names.iter().find(|id| id.ends_with(&format!("/{name}")));
        let (Some(id), Some(value)) = (id, value) else { continue };
        secrets
            .put_secret_value()
            .secret_id(id)
            .secret_string(value)
            .send()
            .await
            .map_err(crate::sdk_error)
            .with_context(|| format!("setting the secret {id}"))?;
    }
    Ok(())
}

pub async fn status() -> Result<()> {
    let state = State::load()?;
    let report = super::run::snapshot(&state, &Outputs::load()?, true).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub async fn qualtrics() -> Result<()> {
    let state = State::load()?;
    ensure!(
        state.mock_qualtrics_port.is_some(),
        "the stack calls {}, not the mock Qualtrics API: it has no record to show",
        state.qualtrics_url
    );
    let text = etlgen_runtime::local::reqwest::get(format!("{}/__mock/state", state.qualtrics_url))
        .await
        .and_then(etlgen_runtime::local::reqwest::Response::error_for_status)
        .context("reaching the mock Qualtrics API")?
        .text()
        .await?;
    println!("{text}");
    Ok(())
}

pub async fn faults(path: &Path) -> Result<()> {
    let state = State::load()?;
    let faults = read_faults(path)?;
    ensure!(
        state.mock_qualtrics_port.is_some(),
        "the stack calls {}, not the mock Qualtrics API: there are no faults to set",
        state.qualtrics_url
    );
    let response = etlgen_runtime::local::reqwest::Client::new()
        .put(format!("{}/__mock/faults", state.qualtrics_url))
        .json(&faults)
        .send()
        .await
        .context("reaching the mock Qualtrics API")?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    ensure!(status.is_success(), "the mock refused the faults ({status}): {body}");
    println!("Faults set from {}.", path.display());
    Ok(())
}

pub async fn down() -> Result<()> {
    let state = State::load()?;
    stop_processes(&state).await;
    if state.moto_pid.is_some() {
        // The emulator's resources went with it: the next `up` starts from nothing.
        for name in ["terraform.tfstate", "terraform.tfstate.backup"] {
            let path = env_dir().join(name);
            if path.exists() {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
    } else {
        terraform(&[
            "destroy",
            "-input=false",
            "-auto-approve",
            "-no-color",
            &format!("-var=aws_endpoint={}", state.aws_endpoint),
            &format!("-var=dist_dir={}", dir().join("dist").display()),
        ])?;
    }
    let path = dir().join("state.json");
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    println!("The local stack is down.");
    Ok(())
}

fn unzip_bootstrap(zip_path: &Path, into: &Path) -> Result<PathBuf> {
    let file =
        fs::File::open(zip_path).with_context(|| format!("opening {}", zip_path.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("reading {}", zip_path.display()))?;
    let mut entry = archive
        .by_name("bootstrap")
        .with_context(|| format!("no bootstrap in {}", zip_path.display()))?;
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes)?;
    fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    let path = into.join("bootstrap");
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(path)
}
