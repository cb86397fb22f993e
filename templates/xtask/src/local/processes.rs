//! The processes of the local stack: starting moto and `serve` detached (each leading its
//! own process group), waiting until they answer, and stopping them and everything they
//! started.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::stack::{State, dir, root};

/// Stops `serve` (through its control API, then by signal), and the AWS emulator and SFTP
/// server `up` started.
pub(super) async fn stop_processes(state: &State) {
    if let Some(pid) = state.serve_pid {
        let asked = etlgen_runtime::local::reqwest::Client::new()
            .post(format!("{}/shutdown", state.control_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok();
        for _ in 0..100 {
            if !alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !asked || alive(pid) {
            signal(pid, "-TERM");
            gone(pid).await;
        }
        // Its process group holds the functions it started: none may outlive it.
        signal(pid, "-KILL");
    }
    for pid in [state.moto_pid, state.sftp_pid].into_iter().flatten() {
        signal(pid, "-TERM");
        gone(pid).await;
        signal(pid, "-KILL");
    }
}

/// Waits (at most 10 s) until a process has exited.
pub(super) async fn gone(pid: u32) {
    for _ in 0..100 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a process is still running (and not a zombie).
pub(super) fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'),
        Err(_) => {
            Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success())
        }
    }
}

/// Sends a signal to the process group `up` started `pid` in (it leads its own group).
pub(super) fn signal(group: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

pub(super) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

pub(super) fn detached(command: &mut Command, log: &Path) -> Result<u32> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(command, 0);
    let child = command.spawn()?;
    Ok(child.id())
}

pub(super) fn spawn_moto(port: u16, log: &Path) -> Result<u32> {
    let program = std::env::var_os("MOTO_SERVER").unwrap_or_else(|| "moto_server".into());
    detached(Command::new(&program).args(["-H", "127.0.0.1", "-p", &port.to_string()]), log)
        .with_context(|| {
            format!(
                "starting {} (install it with `pip install 'moto[server]'`, or pass --endpoint)",
                Path::new(&program).display()
            )
        })
}

pub(super) fn spawn_serve(log: &Path) -> Result<u32> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    detached(Command::new(exe).args(["local", "serve"]).current_dir(root()), log)
        .context("starting the Lambda emulator")
}

/// Waits (at most 60 s) until `url` answers, or the process that should answer exits.
pub(super) async fn wait_for(url: &str, what: &str, pid: Option<u32>) -> Result<()> {
    let logs = dir().join("logs");
    let client = etlgen_runtime::local::reqwest::Client::new();
    for _ in 0..300 {
        if client.get(url).timeout(Duration::from_secs(2)).send().await.is_ok() {
            return Ok(());
        }
        if pid.is_some_and(|pid| !alive(pid)) {
            bail!("{what} exited before answering at {url}; see its log in {}", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{what} did not answer at {url} within 60 s; see the logs in {}", logs.display())
}
