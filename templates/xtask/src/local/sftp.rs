//! The local SFTP server of an SFTP-source pipeline: OpenSSH's own `sshd` on a loopback
//! port, serving `.local/sftp/inbox` to a key made for it. The poller Lambda logs in with
//! that key, pins the server's host key and copies files exactly as it does from a client's
//! server; `local run` puts its file in the inbox.
//!
//! OpenSSH rather than an SFTP server of our own: the client is then tested against the
//! server most clients run.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use super::processes::{alive, detached, free_port};

/// A running local SFTP server, and what the poller needs to reach it.
#[derive(Debug)]
pub struct LocalSftp {
    /// The `sshd` process (it leads its own process group).
    pub pid: u32,
    /// The folder the poller lists.
    pub inbox: PathBuf,
    /// `ETL__…` variables for the Lambdas: host, port, user, host key, remote folder.
    pub environment: Vec<(String, String)>,
    /// The SFTP secret's JSON (`{"private_key": …}`).
    pub secret: String,
}

/// Starts `sshd` for the poller step `step`, with fresh keys in `dir` (`.local/sftp`).
pub fn start(dir: &Path, log: &Path, step: &str) -> Result<LocalSftp> {
    let sshd = find_sshd()?;
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let inbox = dir.join("inbox");
    fs::create_dir_all(&inbox).with_context(|| format!("creating {}", inbox.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let inbox = dir.join("inbox");
    let host_key = keygen(&dir.join("host_key"))?;
    let client_key = keygen(&dir.join("client_key"))?;
    let authorized = dir.join("authorized_keys");
    fs::copy(client_key.with_extension("pub"), &authorized)
        .with_context(|| format!("writing {}", authorized.display()))?;
    let fingerprint = fingerprint(&host_key.with_extension("pub"))?;
    let user = output(Command::new("id").arg("-un"), "id -un")?;
    if output(Command::new("id").arg("-u"), "id -u")? == "0" {
        privilege_separation_dir()?;
    }

    let port = free_port()?;
    let config = dir.join("sshd_config");
    let text = sshd_config(port, &host_key, &authorized, &user);
    fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let checked = Command::new(&sshd)
        .args(["-t", "-f"])
        .arg(&config)
        .output()
        .with_context(|| format!("running {}", sshd.display()))?;
    ensure!(
        checked.status.success(),
        "{} refused its configuration {}: {}",
        sshd.display(),
        config.display(),
        String::from_utf8_lossy(&checked.stderr).trim()
    );
    let pid = detached(Command::new(&sshd).args(["-D", "-e", "-f"]).arg(&config), log)
        .with_context(|| format!("starting {}", sshd.display()))?;
    wait_listening(port, pid, log)?;

    let private_key = fs::read_to_string(&client_key)
        .with_context(|| format!("reading {}", client_key.display()))?;
    let step_var = step.replace('-', "_").to_uppercase();
    let environment = vec![
        ("ETL__SFTP__HOST".to_owned(), "127.0.0.1".to_owned()),
        ("ETL__SFTP__PORT".to_owned(), port.to_string()),
        ("ETL__SFTP__USER".to_owned(), user),
        ("ETL__SFTP__HOST_KEY_SHA256".to_owned(), fingerprint),
        (format!("ETL__STEPS__{step_var}__REMOTE_DIR"), inbox.display().to_string()),
        // `local run` writes the file whole before it sends the tick.
        (format!("ETL__STEPS__{step_var}__SETTLE_SECONDS"), "0".to_owned()),
    ];
    let secret = serde_json::json!({ "private_key": private_key }).to_string();
    Ok(LocalSftp { pid, inbox, environment, secret })
}

/// `sshd` by absolute path (it re-executes itself, so it must have one): `$SSHD`, PATH, or
/// where distributions install it.
fn find_sshd() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SSHD") {
        let path = PathBuf::from(path);
        ensure!(path.is_absolute(), "SSHD={} must be an absolute path", path.display());
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("sshd"))
        .find(|candidate| candidate.is_absolute() && candidate.is_file())
        .context(
            "this pipeline's source is SFTP, and its local stack runs OpenSSH's sshd, which \
             was not found: install it (Debian and Ubuntu: `apt-get install openssh-server`), \
             set SSHD to its path, or serve a folder with an SFTP server of your own and pass \
             `--sftp-dir DIR --sftp-secret JSON --set-env ETL__SFTP__HOST=… …` to `local up`",
        )
}

/// A new ed25519 key pair without a passphrase at `path` (and `path.pub`).
fn keygen(path: &Path) -> Result<PathBuf> {
    output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "etlgen-local", "-f"])
            .arg(path),
        "ssh-keygen (it comes with OpenSSH's client)",
    )?;
    Ok(path.to_owned())
}

/// The SHA-256 fingerprint of a public key, `SHA256:…` as `ssh-keygen -l` prints it.
fn fingerprint(public_key: &Path) -> Result<String> {
    let line = output(
        Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(public_key),
        "ssh-keygen -l",
    )?;
    parse_fingerprint(&line)
        .with_context(|| format!("ssh-keygen -l printed no SHA256 fingerprint: {line:?}"))
}

/// The fingerprint in `256 SHA256:abc… comment (ED25519)`.
fn parse_fingerprint(line: &str) -> Option<String> {
    line.split_whitespace().find(|word| word.starts_with("SHA256:")).map(str::to_owned)
}

/// Run as root, `sshd` needs its privilege separation folder, which a distribution's
/// service manager creates at boot; on a machine without one running, make it as that
/// would (root's, mode 0755).
fn privilege_separation_dir() -> Result<()> {
    let dir = Path::new("/run/sshd");
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("setting the mode of {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Loopback only, this key only, SFTP only: the server can do nothing but serve files to
/// the poller.
fn sshd_config(port: u16, host_key: &Path, authorized: &Path, user: &str) -> String {
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {}\n\
         PidFile none\n\
         AuthorizedKeysFile {}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         AllowUsers {user}\n\
         AllowTcpForwarding no\n\
         X11Forwarding no\n\
         Subsystem sftp internal-sftp\n\
         ForceCommand internal-sftp\n",
        host_key.display(),
        authorized.display()
    )
}

/// Waits (at most 10 s) until the server accepts connections, or fails if it exits.
fn wait_listening(port: u16, pid: u32, log: &Path) -> Result<()> {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if !alive(pid) {
            bail!("sshd exited before listening on port {port}; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("sshd did not listen on port {port} within 10 s; see {}", log.display())
}

/// A command's trimmed stdout; an error naming `what` if it fails.
fn output(command: &mut Command, what: &str) -> Result<String> {
    let out = command.output().with_context(|| format!("running {what}"))?;
    ensure!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_read_from_ssh_keygens_line() {
        assert_eq!(
            parse_fingerprint("256 SHA256:DKdwbE4sy5MQ97//n+q4F5t8 etlgen-local (ED25519)"),
            Some("SHA256:DKdwbE4sy5MQ97//n+q4F5t8".to_owned())
        );
        assert_eq!(parse_fingerprint("256 MD5:aa:bb etlgen-local (ED25519)"), None);
    }

    #[test]
    fn the_server_listens_on_loopback_and_serves_only_sftp_to_one_user() {
        let text = sshd_config(2222, Path::new("/k/host"), Path::new("/k/auth"), "etl");
        for line in [
            "ListenAddress 127.0.0.1",
            "Port 2222",
            "AllowUsers etl",
            "PasswordAuthentication no",
            "ForceCommand internal-sftp",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }
}
