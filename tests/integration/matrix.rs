//! Every service combination the catalog allows renders, and its Cargo
//! manifests parse and agree with each other and with the lock file.

use etlgen::answers::Answers;
use etlgen::catalog::Catalog;
use etlgen::plan::Plan;
use etlgen::render::render;

use crate::helpers::every_combination;

#[test]
fn every_allowed_combination_renders_consistent_manifests() {
    let catalog = Catalog::builtin();
    let (mut rendered, mut rejected) = (0, 0);
    for (label, raw) in every_combination("matrix") {
        let Ok(answers) = Answers::resolve(&raw, catalog) else {
            rejected += 1;
            continue;
        };
        let plan = Plan::new(answers.clone()).unwrap();
        let tree = render(&plan).unwrap_or_else(|e| panic!("{label}: {e}"));
        check_workspace(&answers, &tree);
        rendered += 1;
    }
    // 6 selectable kinds give 63 non-empty subsets per source; the catalog's
    // requirements reject some (a scheduler without contacts, for example).
    assert!(rendered > 60, "rendered {rendered}");
    assert!(rejected > 0, "the requirements rejected nothing");
    assert_eq!(rendered + rejected, 3 * 63);
}

fn check_workspace(answers: &Answers, tree: &etlgen::render::Tree) {
    let text = |p: &str| {
        std::str::from_utf8(&tree[p])
            .unwrap_or_else(|_| panic!("{p} is UTF-8"))
            .to_string()
    };
    let root: toml::Table = toml::from_str(&text("Cargo.toml")).unwrap();
    let members: Vec<&str> = root["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    // One crate per step, the vendored framework and the xtask packager.
    assert_eq!(members.len(), answers.steps.len() + 2, "{members:?}");
    assert!(members.contains(&"xtask"), "{members:?}");
    assert!(members.contains(&"vendor/etlgen-runtime"), "{members:?}");
    let lock: toml::Table = toml::from_str(&text("Cargo.lock")).unwrap();
    let locked: Vec<&str> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for member in &members {
        let manifest: toml::Table = toml::from_str(&text(&format!("{member}/Cargo.toml"))).unwrap();
        let name = manifest["package"]["name"].as_str().unwrap();
        assert!(locked.contains(&name), "{name} is not in Cargo.lock");
        if let Some(deps) = manifest.get("dependencies").and_then(|d| d.as_table()) {
            for (dep, spec) in deps {
                if let Some(path) = spec.get("path").and_then(|p| p.as_str()) {
                    let target = normalize(&format!("{member}/{path}"));
                    assert!(
                        tree.contains_key(&format!("{target}/Cargo.toml")),
                        "{member}: {dep} at {target}"
                    );
                }
            }
        }
    }
    for step in &answers.steps {
        for file in [
            "src/main.rs",
            "src/hooks.rs",
            "tests/hooks.rs",
            "Cargo.toml",
        ] {
            assert!(
                tree.contains_key(&format!("lambdas/{}/{file}", step.name)),
                "{} {file}",
                step.name
            );
        }
    }
}

/// Resolves `..` in a `/`-separated relative path.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}
