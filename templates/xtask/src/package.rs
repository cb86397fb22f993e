//! `cargo xtask package`: builds every Lambda of `lambdas/` in release mode for Linux,
//! zips each binary as `bootstrap` into `dist/<step>.zip`, and writes `dist/SHA256SUMS` and
//! `dist/manifest.json` (version, git commit, and each artifact's name, file, SHA-256 and
//! size).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, ValueEnum};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

#[derive(Debug, Args)]
pub struct Package {
    /// CPU architecture of the Lambdas; Terraform deploys arm64.
    #[arg(long, value_enum, default_value_t = Arch::Arm64)]
    pub arch: Arch,
    /// Version recorded in the manifest, and the artifacts' folder in the artifacts bucket
    /// [default: `git describe --tags --always --dirty`, else 0.0.0-dev].
    #[arg(long)]
    pub version: Option<String>,
    /// How to build: cargo-lambda when installed (auto), or one of them explicitly.
    #[arg(long, value_enum, default_value_t = Builder::Auto)]
    pub builder: Builder,
    /// Where the zips, SHA256SUMS and manifest.json go, relative to the workspace root.
    #[arg(long, default_value = "dist")]
    pub out_dir: PathBuf,
}

/// A Lambda architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// Graviton (aarch64-unknown-linux-gnu): what Terraform deploys.
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
    /// x86-64 (x86_64-unknown-linux-gnu).
    #[value(name = "x86_64", alias = "x86-64", alias = "amd64")]
    X86_64,
}

impl Arch {
    /// The architecture of this machine, for local runs.
    pub fn host() -> Result<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Arm64),
            other => bail!("Lambda runs on arm64 or x86_64, and this machine is {other}"),
        }
    }

    /// Lambda's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The Rust target it builds for.
    pub fn triple(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
        }
    }
}

/// What builds the binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Builder {
    /// cargo-lambda if `cargo lambda` runs, else cargo.
    Auto,
    /// `cargo lambda build`.
    CargoLambda,
    /// `cargo build --target`.
    Cargo,
}

/// One packaged Lambda.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Artifact {
    name: String,
    file: String,
    sha256: String,
    size: u64,
}

pub fn package(args: &Package) -> Result<()> {
    let version = match &args.version {
        Some(v) => v.clone(),
        None => default_version(),
    };
    check_version(&version)?;
    let workspace = Workspace::load()?;
    ensure!(!workspace.lambdas.is_empty(), "no Lambda binaries found under lambdas/");
    let builder = match args.builder {
        Builder::Auto if has_cargo_lambda() => Builder::CargoLambda,
        Builder::Auto => Builder::Cargo,
        chosen => chosen,
    };
    let triple = args.arch.triple();
    let binaries = match builder {
        Builder::CargoLambda => build_with_cargo_lambda(&workspace, triple)?,
        _ => build_with_cargo(&workspace, triple)?,
    };

    let out_dir = workspace.root.join(&args.out_dir);
    clean_out_dir(&out_dir)?;
    let mut artifacts = Vec::new();
    for (name, binary) in &binaries {
        let file = format!("{name}.zip");
        let bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
        let zipped = zip_bootstrap(&bytes)?;
        fs::write(out_dir.join(&file), &zipped)
            .with_context(|| format!("writing {}", out_dir.join(&file).display()))?;
        artifacts.push(Artifact {
            name: name.clone(),
            file,
            sha256: sha256_hex(&zipped),
            size: zipped.len() as u64,
        });
    }
    fs::write(out_dir.join("SHA256SUMS"), sha256sums(&artifacts))?;
    let manifest =
        manifest(&version, git_commit(&workspace.root).as_deref(), args.arch, &artifacts);
    fs::write(out_dir.join("manifest.json"), manifest)?;

    let builder = if builder == Builder::CargoLambda { "cargo-lambda" } else { "cargo" };
    println!("Packaged {} Lambdas ({}, {builder}) as version {version}:", artifacts.len(), triple);
    for a in &artifacts {
        println!("  {}/{}  {} bytes  sha256 {}", args.out_dir.display(), a.file, a.size, a.sha256);
    }
    println!("  {}/SHA256SUMS", args.out_dir.display());
    println!("  {}/manifest.json", args.out_dir.display());
    Ok(())
}

/// The workspace as `cargo metadata` describes it.
struct Workspace {
    root: PathBuf,
    target_dir: PathBuf,
    /// Package name and its binaries, for every package under `lambdas/`.
    lambdas: BTreeMap<String, Vec<String>>,
}

impl Workspace {
    fn load() -> Result<Workspace> {
        let out = cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .context("running cargo metadata")?;
        ensure!(out.status.success(), "cargo metadata failed");
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Workspace::from_metadata(&meta)
    }

    fn from_metadata(meta: &serde_json::Value) -> Result<Workspace> {
        let path = |key: &str| {
            meta[key].as_str().map(PathBuf::from).with_context(|| format!("no {key} in metadata"))
        };
        let root = path("workspace_root")?;
        let target_dir = path("target_directory")?;
        let lambdas_dir = root.join("lambdas");
        let mut lambdas = BTreeMap::new();
        for package in meta["packages"].as_array().into_iter().flatten() {
            let manifest = package["manifest_path"].as_str().unwrap_or_default();
            if !Path::new(manifest).starts_with(&lambdas_dir) {
                continue;
            }
            let bins: Vec<String> = package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect();
            if let (Some(name), false) = (package["name"].as_str(), bins.is_empty()) {
                lambdas.insert(name.to_owned(), bins);
            }
        }
        Ok(Workspace { root, target_dir, lambdas })
    }

    fn package_args(&self) -> Vec<String> {
        self.lambdas.keys().flat_map(|p| ["--package".to_owned(), p.clone()]).collect()
    }

    fn binaries(&self) -> impl Iterator<Item = &String> {
        self.lambdas.values().flatten()
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn has_cargo_lambda() -> bool {
    cargo()
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn build_with_cargo_lambda(ws: &Workspace, triple: &str) -> Result<BTreeMap<String, PathBuf>> {
    let lambda_dir = ws.target_dir.join("lambda");
    let status = cargo()
        .args(["lambda", "build", "--release", "--locked", "--target", triple, "--lambda-dir"])
        .arg(&lambda_dir)
        .args(ws.package_args())
        .current_dir(&ws.root)
        .status()
        .context("running cargo lambda build")?;
    ensure!(status.success(), "cargo lambda build failed");
    Ok(ws.binaries().map(|b| (b.clone(), lambda_dir.join(b).join("bootstrap"))).collect())
}

fn build_with_cargo(ws: &Workspace, triple: &str) -> Result<BTreeMap<String, PathBuf>> {
    check_target_installed(triple)?;
    let status = cargo()
        .args(["build", "--release", "--locked", "--target", triple])
        .args(ws.package_args())
        .current_dir(&ws.root)
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build --release --target {triple} failed");
    let dir = ws.target_dir.join(triple).join("release");
    Ok(ws.binaries().map(|b| (b.clone(), dir.join(b))).collect())
}

/// Fails early, with the fix, when the target's standard library is missing.
fn check_target_installed(triple: &str) -> Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().context("running rustc")?;
    let sysroot = String::from_utf8(out.stdout)?.trim().to_owned();
    if !Path::new(&sysroot).join("lib/rustlib").join(triple).join("lib").is_dir() {
        bail!(
            "the Rust standard library for {triple} is not installed; either install cargo-lambda \
             (it cross-compiles with Zig), or run `rustup target add {triple}` and set a linker \
             for it (CARGO_TARGET_{}_LINKER)",
            triple.to_uppercase().replace('-', "_")
        );
    }
    Ok(())
}

/// Removes what an earlier run left, so the folder holds exactly this package.
fn clean_out_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".zip") || name == "SHA256SUMS" || name == "manifest.json" {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// A zip holding `binary` as an executable `bootstrap`, with a fixed timestamp so the same
/// binary always gives the same zip and checksum.
fn zip_bootstrap(binary: &[u8]) -> Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755)
        .last_modified_time(zip::DateTime::default());
    zip.start_file("bootstrap", options)?;
    zip.write_all(binary)?;
    Ok(zip.finish()?.into_inner())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256sum`'s format, so `sha256sum -c SHA256SUMS` checks the folder.
fn sha256sums(artifacts: &[Artifact]) -> String {
    artifacts.iter().map(|a| format!("{}  {}\n", a.sha256, a.file)).collect()
}

fn manifest(version: &str, commit: Option<&str>, arch: Arch, artifacts: &[Artifact]) -> String {
    let artifacts: Vec<serde_json::Value> = artifacts
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name,
                "file": a.file,
                "sha256": a.sha256,
                "size": a.size,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "version": version,
        "commit": commit,
        "arch": arch.name(),
        "target": arch.triple(),
        "runtime": "provided.al2023",
        "handler": "bootstrap",
        "artifacts": artifacts,
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    text.push('\n');
    text
}

/// A version is a folder name in the artifacts bucket: letters, digits, `.`, `_`, `+`, `-`.
fn check_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || ".+_-".contains(c));
    ensure!(
        ok,
        "invalid version {version:?}: use letters, digits, '.', '_', '+' and '-', starting \
         with a letter or digit (for example v1.2.0)"
    );
    Ok(())
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out =
        Command::new("git").args(args).current_dir(root).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn git_commit(root: &Path) -> Option<String> {
    let commit = git(root, &["rev-parse", "--verify", "HEAD"]);
    if commit.is_none() {
        eprintln!("warning: no git commit found; manifest.json records \"commit\": null");
    }
    commit
}

fn default_version() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    git(root, &["describe", "--tags", "--always", "--dirty"])
        .unwrap_or_else(|| "0.0.0-dev".to_owned())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_zip_holds_the_binary_as_an_executable_bootstrap_and_is_reproducible() {
        let binary = b"\x7fELF not really, but bytes all the same".repeat(100);
        let zipped = zip_bootstrap(&binary).unwrap();
        assert_eq!(zipped, zip_bootstrap(&binary).unwrap(), "same input, same zip");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
        assert_eq!(archive.len(), 1);
        let mut entry = archive.by_name("bootstrap").unwrap();
        assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(0o755));
        let mut back = Vec::new();
        entry.read_to_end(&mut back).unwrap();
        assert_eq!(back, binary);
    }

    #[test]
    fn checksums_and_manifest_name_every_artifact() {
        let artifacts = vec![Artifact {
            name: "validator".into(),
            file: "validator.zip".into(),
            sha256: sha256_hex(b"abc"),
            size: 3,
        }];
        assert_eq!(
            sha256sums(&artifacts),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  validator.zip\n"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&manifest("v1.0.0", Some("abc123"), Arch::Arm64, &artifacts))
                .unwrap();
        assert_eq!(doc["version"], "v1.0.0");
        assert_eq!(doc["commit"], "abc123");
        assert_eq!(doc["target"], "aarch64-unknown-linux-gnu");
        assert_eq!(doc["artifacts"][0]["file"], "validator.zip");
        assert_eq!(doc["artifacts"][0]["size"], 3);
    }

    #[test]
    fn versions_are_safe_folder_names() {
        for good in ["v1.2.0", "1.2.0-rc.1+build.5", "0.0.0-dev", "abc1234-dirty"] {
            check_version(good).unwrap();
        }
        for bad in ["", "../x", "v1/2", "-v1", ".v1", "v 1", "v1\n"] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lambdas_are_the_binaries_under_lambdas() {
        let meta = serde_json::json!({
            "workspace_root": "/w",
            "target_directory": "/w/target",
            "packages": [
                {"name": "validator", "manifest_path": "/w/lambdas/validator/Cargo.toml",
                 "targets": [{"kind": ["bin"], "name": "validator"},
                             {"kind": ["test"], "name": "hooks"}]},
                {"name": "xtask", "manifest_path": "/w/xtask/Cargo.toml",
                 "targets": [{"kind": ["bin"], "name": "xtask"}]},
                {"name": "etlgen-runtime", "manifest_path": "/w/vendor/etlgen-runtime/Cargo.toml",
                 "targets": [{"kind": ["lib"], "name": "etlgen_runtime"}]},
            ],
        });
        let ws = Workspace::from_metadata(&meta).unwrap();
        assert_eq!(ws.binaries().collect::<Vec<_>>(), ["validator"]);
        assert_eq!(ws.package_args(), ["--package", "validator"]);
        assert_eq!(ws.target_dir, Path::new("/w/target"));
    }
}
