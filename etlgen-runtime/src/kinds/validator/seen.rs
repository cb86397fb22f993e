//! The primary keys a run has seen, for rejecting repeated keys.
//!
//! A 64-bit hash of each key is kept, never the key, so memory is eight bytes per distinct
//! key and the set's spare room, whatever the keys' length.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::schema::ValueRef;

/// The keys seen so far.
#[derive(Debug, Default)]
pub(super) struct Seen(HashSet<u64, BuildHasherDefault<Prehashed>>);

impl Seen {
    /// Records the key of a row (`None` when the row lacks the key column); a key seen
    /// before is the rejection reason.
    pub(super) fn insert(&mut self, column: &str, key: Option<ValueRef<'_>>) -> Result<(), String> {
        if self.0.insert(hash(key)) {
            Ok(())
        } else {
            Err(format!("duplicate primary key {column} = {}", display(key)))
        }
    }
}

/// A key's hash: text as itself, any other value as its JSON text, a missing key as "".
fn hash(key: Option<ValueRef<'_>>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match key {
        Some(ValueRef::Text(s)) => s.hash(&mut hasher),
        Some(ValueRef::Other(other)) => other.to_string().hash(&mut hasher),
        None => "".hash(&mut hasher),
    }
    hasher.finish()
}

/// A key as the rejection reason shows it: as JSON.
fn display(key: Option<ValueRef<'_>>) -> String {
    match key {
        Some(ValueRef::Text(s)) => serde_json::Value::from(s).to_string(),
        Some(ValueRef::Other(other)) => other.to_string(),
        None => String::new(),
    }
}

/// The hasher of the set, whose keys are already SipHash values: hashing them a second
/// time would only cost time. (No crate offers this four-line identity hasher.)
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repeated_key_is_rejected_with_its_json_text() {
        let mut seen = Seen::default();
        assert!(seen.insert("id", Some(ValueRef::Text("a\"b"))).is_ok());
        assert_eq!(
            seen.insert("id", Some(ValueRef::Text("a\"b"))).unwrap_err(),
            r#"duplicate primary key id = "a\"b""#
        );
        let n = json!(42);
        assert!(seen.insert("id", Some(ValueRef::Other(&n))).is_ok());
        assert_eq!(
            seen.insert("id", Some(ValueRef::Other(&n))).unwrap_err(),
            "duplicate primary key id = 42"
        );
        assert!(seen.insert("id", None).is_ok());
        assert_eq!(
            seen.insert("id", None).unwrap_err(),
            "duplicate primary key id = "
        );
    }

    #[test]
    fn a_number_and_its_text_are_the_same_key() {
        let mut seen = Seen::default();
        let n = json!(7);
        assert!(seen.insert("id", Some(ValueRef::Other(&n))).is_ok());
        assert!(seen.insert("id", Some(ValueRef::Text("7"))).is_err());
    }
}
