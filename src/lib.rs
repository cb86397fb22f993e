//! etlgen generates per-client Qualtrics ETL automation repositories.
//!
//! The crate is a pipeline with the filesystem and the terminal only at its
//! edges: prompts, flags and answers files become [`answers::Answers`]; the
//! answers become a [`plan::Plan`]; the plan renders to an in-memory tree;
//! [`write`] is the only module that touches the disk and [`git`] the only one
//! that talks to git. The binary in `main.rs` only parses arguments and calls
//! [`cmd::run`].

pub mod answers;
pub mod catalog;
pub mod cli;
pub mod cmd;
pub mod git;
pub mod interview;
pub mod lifecycle;
pub mod lockfile;
pub mod plan;
pub mod prompt;
pub mod render;
pub mod scope;
pub mod templates;
pub mod write;
