//! `etlgen list`: the service catalog, for people scoping a pipeline and for
//! tools (`--format json`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::catalog::Catalog;

/// Output format of `list`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// The catalog as JSON.
    Json,
}

/// Arguments of `etlgen list`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Prints the catalog.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<ExitCode> {
    let catalog = Catalog::builtin();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, catalog)?;
            writeln!(out)?;
        }
        Format::Text => write_text(catalog, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn write_text(catalog: &Catalog, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "Sources (--source):")?;
    for s in &catalog.sources {
        let default = if s.id == catalog.defaults.source {
            " [default]"
        } else {
            ""
        };
        writeln!(out, "  {:<6} {}{default}", s.id, s.description)?;
    }
    writeln!(out, "\nServices (--services KIND[:NAME]):")?;
    for k in &catalog.kinds {
        let mut tags = vec![k.stage.to_string()];
        if k.repeatable {
            tags.push("repeatable".into());
        }
        if !k.selectable {
            tags.push("comes with its source".into());
        }
        if catalog.defaults.services.contains(&k.id) {
            tags.push("default".into());
        }
        writeln!(out, "\n  {} ({})", k.id, tags.join(", "))?;
        writeln!(out, "    {}", k.description)?;
        let s = &k.settings;
        let queue = if s.fifo {
            "FIFO queue".to_string()
        } else {
            format!("max concurrency {}", s.max_concurrency)
        };
        writeln!(
            out,
            "    defaults: batch {}, window {}s, {queue}, timeout {}s, memory {} MB, /tmp {} MB, maxReceiveCount {}",
            s.batch_size,
            s.batching_window_seconds,
            s.timeout_seconds,
            s.memory_mb,
            s.ephemeral_storage_mb,
            s.max_receive_count
        )?;
        writeln!(out, "    hooks:    {}", k.hooks.join(", "))?;
        let from = match k.consumes.as_str() {
            Catalog::INPUT => "the client's input, through the landing zone".to_string(),
            Catalog::SCHEDULE => "the pipeline's schedule".to_string(),
            Catalog::ANY => "whatever the earlier stages' last steps emit".to_string(),
            message => format!("{message} from {}", catalog.producers(message).join(" or ")),
        };
        let alternative: String = k
            .params
            .iter()
            .filter_map(|p| {
                let instead = p.consumes_instead.as_ref()?;
                Some(format!(" (with {} set: {instead})", p.name))
            })
            .collect();
        writeln!(out, "    reads:    {from}{alternative}")?;
        if let Some(emits) = &k.emits {
            writeln!(out, "    sends:    {emits}")?;
        }
        for p in &k.params {
            let default = p
                .default
                .as_ref()
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            writeln!(out, "    --set <step>.{} : {}{default}", p.name, p.help)?;
        }
    }
    Ok(())
}
