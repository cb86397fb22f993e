//! etlgen's integration tests: one binary, one module per feature, in the
//! style of cargo-generate's and ripgrep's suites.

mod bad_input;
mod delivery;
mod generated_build;
mod helpers;
mod lifecycle;
mod list;
mod matrix;
mod new;
mod personal_env;
mod pipeline_run;
mod plan_cmd;
mod pty;
mod snapshots;
mod terraform;
mod tools;
