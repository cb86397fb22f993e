//! Rebuilds etlgen when an embedded file changes: `include_dir!` does not tell
//! Cargo which files it read, so without this a template edit or a framework
//! change would not reach the binary until an unrelated source change.

fn main() {
    for path in [
        "templates",
        "etlgen-runtime",
        "src/catalog.toml",
        "src/lockfile/base.lock",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}
