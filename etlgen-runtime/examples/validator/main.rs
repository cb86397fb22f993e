//! The `validate` Lambda: streams a landed file, rejects bad rows, emits batches.
//!
//! Owned by etlgen and regenerated; the client's code goes in `hooks.rs`.
mod hooks;

use etlgen_runtime::config::ConfigSources;

const CONFIG: ConfigSources = ConfigSources {
    default: include_str!("../config/default.toml"),
    environments: &[
        ("dev", include_str!("../config/dev.toml")),
        ("prod", include_str!("../config/prod.toml")),
    ],
};

fn main() -> Result<(), etlgen_runtime::Error> {
    etlgen_runtime::lambda::run::<etlgen_runtime::kinds::validator::Validator<hooks::ClientHooks>>(
        "validate", &CONFIG,
    )
}
