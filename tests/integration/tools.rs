//! The real tools the integration tests judge generated repositories with,
//! and the one way they build a generated workspace.
//!
//! Python tools (checkov, moto, check-jsonschema, shellcheck) come from the
//! virtualenv `scripts/test` makes: `$ETLGEN_VENV`, else `.venv` at the
//! repository root. A missing tool fails the test that needs it, with the
//! command that installs it: a check that did not run is not a pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// The virtualenv `scripts/test` installs the Python tools into.
pub fn venv() -> PathBuf {
    std::env::var_os("ETLGEN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

/// A tool of the virtualenv, else of PATH; a failed test when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let in_venv = venv().join("bin").join(name);
    if in_venv.is_file() {
        return in_venv;
    }
    on_path(name).unwrap_or_else(|| {
        panic!(
            "{name} is not installed: run scripts/test, which installs it into .venv \
             (or point ETLGEN_VENV at a virtualenv that has it)"
        )
    })
}

/// `name` on PATH, if it is there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Fails with the tail of both streams unless the command succeeded.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 80),
        tail(&String::from_utf8_lossy(&out.stderr), 80),
    );
}

/// The last `n` lines of a long log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The target directory every generated workspace builds into, so the
/// framework's dependencies compile once per test run (as the
/// aws-lambda-rust-runtime examples share theirs).
pub fn shared_target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-target")
}

/// Holds the shared target directory for one generated workspace's builds.
///
/// Generated workspaces share crate names (every one has a `validator`), and
/// Cargo hashes a path crate by its place in its workspace, not by where the
/// workspace is; it takes such a crate as fresh when its sources are older
/// than its last build, even if that build was of another workspace's crate.
/// So builds take turns, and each turn first marks its workspace's sources
/// (all but the vendored framework, which is the same everywhere) as just
/// written.
pub struct Workspace<'a> {
    root: &'a Path,
    _turn: MutexGuard<'static, ()>,
}

impl<'a> Workspace<'a> {
    pub fn take_turn(root: &'a Path) -> Workspace<'a> {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::SystemTime::now();
        let skipped = ["vendor", "infra", "dist", "target", ".git"];
        let walk = walkdir::WalkDir::new(root)
            .into_iter()
            .filter_entry(|e| e.depth() != 1 || !skipped.iter().any(|s| e.file_name() == *s));
        for entry in walk {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                fs_err::File::options()
                    .write(true)
                    .open(entry.path())
                    .unwrap()
                    .file()
                    .set_modified(now)
                    .unwrap();
            }
        }
        Workspace { root, _turn: turn }
    }

    /// `cargo` in the workspace, into the shared target, warnings denied.
    /// The release profile's LTO and single codegen unit are turned off
    /// through Cargo's environment overrides: they make a build minutes
    /// slower and change nothing a test checks.
    pub fn cargo(&self, args: &[&str]) -> Output {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(self.root)
            .args(args)
            .env("CARGO_TARGET_DIR", shared_target())
            .env("RUSTFLAGS", "-Dwarnings")
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
            .output()
            .expect("cargo runs")
    }
}

/// `git` in `root` as a user, with an identity of its own; its trimmed stdout.
pub fn git(root: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Client Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Client Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git runs");
    assert_ok(&out, &format!("git {args:?}"));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
