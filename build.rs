//! Rebuilds etlgen when an embedded file changes: `include_dir!` does not tell
//! Cargo which files it read, so without this a template edit or a framework
//! change would not reach the binary until an unrelated source change.

fn main() {
    println!("cargo:rerun-if-changed=templates");
    println!("cargo:rerun-if-changed=etlgen-runtime/Cargo.toml");
    println!("cargo:rerun-if-changed=etlgen-runtime/README.md");
    println!("cargo:rerun-if-changed=etlgen-runtime/src");
    println!("cargo:rerun-if-changed=etlgen-runtime/tests");
    println!("cargo:rerun-if-changed=etlgen-runtime/examples");
    println!("cargo:rerun-if-changed=etlgen-runtime/benches");
    println!("cargo:rerun-if-changed=src/lockfile/base.lock");
}
