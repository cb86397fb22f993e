//! How long `etlgen new --yes --no-git` takes, against `cp -r` of the tree it
//! produces: both are whole processes writing the same files to the same disk,
//! so the difference is etlgen's own work (parsing, rendering, checks).
//!
//! Run with `cargo bench --bench new`; figures go in docs/benchmarks.md.

use std::path::Path;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};

const ETLGEN: &str = env!("CARGO_BIN_EXE_etlgen");

fn generate(out: &Path) {
    let status = Command::new(ETLGEN)
        .args(["new", "bench-client", "--yes", "--no-git", "--output"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("etlgen runs");
    assert!(status.success());
}

fn bench(c: &mut Criterion) {
    let scratch = tempfile::tempdir().unwrap();
    let reference = scratch.path().join("reference");
    generate(&reference);
    let mut n = 0u64;
    let mut group = c.benchmark_group("new");
    group.bench_function("etlgen new --yes --no-git", |b| {
        b.iter(|| {
            n += 1;
            generate(&scratch.path().join(format!("gen-{n}")));
        })
    });
    group.bench_function("cp -r (same tree)", |b| {
        b.iter(|| {
            n += 1;
            let status = Command::new("cp")
                .arg("-r")
                .arg(&reference)
                .arg(scratch.path().join(format!("cp-{n}")))
                .status()
                .expect("cp runs");
            assert!(status.success());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
