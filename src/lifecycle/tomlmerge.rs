//! A key-aware 3-way merge of TOML files (`Cargo.toml`, `config/*.toml`),
//! with toml_edit so comments and layout survive.
//!
//! A line merge conflicts whenever both sides add a dependency at the end of
//! the same table; key by key, those are two independent changes. Only when
//! both sides changed the same key differently is there a conflict, and then
//! the caller falls back to a line merge with markers.

use toml_edit::{DocumentMut, Item, Table};

/// Merges `theirs` into `ours` from `base`, key by key; `None` when a key
/// conflicts or a side does not parse.
pub fn merge(base: &str, ours: &str, theirs: &str) -> Option<String> {
    let base: DocumentMut = base.parse().ok()?;
    let ours: DocumentMut = ours.parse().ok()?;
    let theirs: DocumentMut = theirs.parse().ok()?;
    let mut out = ours.clone();
    merge_table(
        base.as_table(),
        ours.as_table(),
        theirs.as_table(),
        out.as_table_mut(),
    )?;
    Some(out.to_string())
}

fn merge_table(base: &Table, ours: &Table, theirs: &Table, out: &mut Table) -> Option<()> {
    let mut keys: Vec<&str> = base.iter().map(|(k, _)| k).collect();
    keys.extend(
        theirs
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !base.contains_key(k)),
    );
    for key in keys {
        let (b, o, t) = (base.get(key), ours.get(key), theirs.get(key));
        if same(o, t) || same(b, t) {
            continue;
        }
        if same(b, o) {
            match t {
                Some(t) => {
                    out.insert(key, t.clone());
                }
                None => {
                    out.remove(key);
                }
            }
            continue;
        }
        match (b, o, t) {
            (Some(Item::Table(b)), Some(Item::Table(o)), Some(Item::Table(t))) => {
                let Some(Item::Table(out)) = out.get_mut(key) else {
                    return None;
                };
                merge_table(b, o, t, out)?;
            }
            _ => return None,
        }
    }
    Some(())
}

/// Whether two items hold the same data, whatever their layout.
fn same(a: Option<&Item>, b: Option<&Item>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => data(a).is_some_and(|a| Some(a) == data(b)),
        _ => false,
    }
}

/// An item as plain TOML data.
fn data(item: &Item) -> Option<toml::Table> {
    let mut doc = DocumentMut::new();
    doc.insert("item", item.clone());
    toml::from_str(&doc.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_adding_dependencies_merge_cleanly() {
        let base = "[package]\nname = \"a\"\n\n[dependencies]\nserde = \"1\"\n";
        let ours =
            "[package]\nname = \"a\"\n\n[dependencies]\nserde = \"1\"\nchrono = \"0.4\" # mine\n";
        let theirs =
            "[package]\nname = \"a\"\n\n[dependencies]\nserde = \"1.0.200\"\ntokio = \"1\"\n";
        let merged = merge(base, ours, theirs).expect("a clean merge");
        let doc: toml::Table = toml::from_str(&merged).unwrap();
        let deps = doc["dependencies"].as_table().unwrap();
        assert_eq!(deps["serde"].as_str(), Some("1.0.200"));
        assert_eq!(deps["tokio"].as_str(), Some("1"));
        assert_eq!(deps["chrono"].as_str(), Some("0.4"));
        assert!(merged.contains("# mine"), "{merged}");
    }

    #[test]
    fn the_same_key_changed_both_ways_is_a_conflict() {
        let base = "[steps.invite]\nbatch_size = 10\n";
        let ours = "[steps.invite]\nbatch_size = 5\n";
        let theirs = "[steps.invite]\nbatch_size = 20\n";
        assert_eq!(merge(base, ours, theirs), None);
    }

    #[test]
    fn a_key_the_render_removed_goes_unless_the_user_changed_it() {
        let base = "a = 1\nb = 2\n";
        let ours = "a = 1\nb = 3\n";
        let theirs = "c = 4\n";
        assert_eq!(merge(base, ours, theirs), None);
        let merged = merge(base, "a = 1\nb = 2\nmine = true\n", theirs).unwrap();
        let doc: toml::Table = toml::from_str(&merged).unwrap();
        assert_eq!(doc.keys().collect::<Vec<_>>(), ["c", "mine"]);
    }
}
