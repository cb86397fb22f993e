//! The `import-responses` Lambda: imports responses with an idempotency key.
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
    etlgen_runtime::lambda::run::<
        etlgen_runtime::kinds::responses::ResponseImporter<hooks::ClientHooks>,
    >("import-responses", &CONFIG)
}
