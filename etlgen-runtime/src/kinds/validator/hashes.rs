//! The in-memory set of key hashes that dedup checks once per row.
//!
//! Written here rather than taken from a crate because of where its time goes. With dedup
//! on, the set is the validator's one random access into up to 32 MiB per row, so its cost
//! is cache misses, and the validator hides them by reading where the next rows' keys go
//! ahead of time (`Seen::warm`). That only helps if what it reads is the memory the insert
//! then writes. `std`'s `HashSet` (hashbrown) keeps a slot's control byte apart from its
//! value, and a look-up of a new key reads only the control bytes, so the insert still
//! waited on the value's line. Here a slot is the 64-bit hash itself (0 marks an empty
//! slot), probed linearly: the first slot read ahead is on the line the insert's probe
//! starts from. The hashes are already uniform (SipHash), so a key's first slot is its
//! hash's low bits.

/// Most slots a table fills before it doubles: 7/8, as hashbrown.
const LOAD: (usize, usize) = (7, 8);

/// The fewest slots a table has once it holds a key.
const MIN_SLOTS: usize = 16;

/// A set of 64-bit hashes.
#[derive(Debug, Default)]
pub(super) struct HashSet64 {
    /// A power of two of slots (or none before the first key); 0 is an empty slot.
    slots: Vec<u64>,
    /// Keys held in `slots`.
    len: usize,
    /// Whether the hash 0 is held (it cannot be, in a slot).
    zero: bool,
}

impl HashSet64 {
    /// How many hashes the set holds.
    pub(super) fn len(&self) -> usize {
        self.len + usize::from(self.zero)
    }

    /// Whether the set holds `hash`.
    pub(super) fn contains(&self, hash: u64) -> bool {
        if hash == 0 {
            return self.zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        matches!(probe(&self.slots, hash), Probe::Held)
    }

    /// The slot where a probe for `hash` starts (0 for an empty table), read so that a
    /// probe soon after finds its line in the cache. Unlike a look-up, no branch depends on
    /// what is read, so reads made one after another overlap instead of waiting on each
    /// other behind a mispredicted end of a probe.
    pub(super) fn first_slot(&self, hash: u64) -> u64 {
        // The low bits, as the table's length is a power of two (truncation intended).
        let at = hash as usize & self.slots.len().wrapping_sub(1);
        self.slots.get(at).copied().unwrap_or(0)
    }

    /// Adds `hash`; whether it was new.
    pub(super) fn insert(&mut self, hash: u64) -> bool {
        if hash == 0 {
            return !std::mem::replace(&mut self.zero, true);
        }
        if self.len >= capacity(self.slots.len()) {
            self.grow();
        }
        match probe(&self.slots, hash) {
            Probe::Held => false,
            Probe::Empty(at) => {
                self.slots[at] = hash;
                self.len += 1;
                true
            }
        }
    }

    /// Every hash held, in the table's own memory, in no particular order.
    pub(super) fn into_vec(self) -> Vec<u64> {
        let mut hashes = self.slots;
        hashes.retain(|&h| h != 0);
        if self.zero {
            hashes.push(0);
        }
        hashes
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![0; slots]);
        for hash in old.into_iter().filter(|&h| h != 0) {
            if let Probe::Empty(at) = probe(&self.slots, hash) {
                self.slots[at] = hash;
            }
        }
    }
}

enum Probe {
    Held,
    Empty(usize),
}

/// Finds `hash` (not 0), or the first empty slot from its own. `slots` is a power of two
/// long and has an empty slot.
fn probe(slots: &[u64], hash: u64) -> Probe {
    let mask = slots.len() - 1;
    // The low bits, as the table's length is a power of two (truncation intended).
    let mut at = hash as usize & mask;
    loop {
        match slots[at] {
            0 => return Probe::Empty(at),
            held if held == hash => return Probe::Held,
            _ => at = (at + 1) & mask,
        }
    }
}

/// Peak bytes of a set of `slots` slots while it grows to them: the new table and the old
/// one of half as many slots, 8 bytes a slot.
pub(super) const fn peak_bytes(slots: usize) -> usize {
    slots.saturating_mul(8).saturating_add(slots / 2 * 8)
}

/// The most hashes a set of `slots` slots holds before it doubles.
pub(super) const fn capacity(slots: usize) -> usize {
    if slots < MIN_SLOTS {
        0
    } else {
        slots / LOAD.1 * LOAD.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_holds_each_hash_once_through_growth_and_wraparound() {
        let mut set = HashSet64::default();
        assert!(!set.contains(7));
        // Hashes that share their low bits collide and wrap around the table's end.
        let hashes: Vec<u64> = (0..5000u64)
            .map(|i| (i << 40) | 0xffff)
            .chain([0, u64::MAX, 1])
            .collect();
        assert_eq!(set.first_slot(7), 0, "an empty table");
        for &h in &hashes {
            assert!(!set.contains(h), "{h:#x} is not held yet");
            assert!(set.insert(h), "{h:#x} is new");
        }
        for &h in &hashes {
            assert!(set.contains(h), "{h:#x} is held");
            assert!(!set.insert(h), "{h:#x} is held");
        }
        assert!(set.slots.len().is_power_of_two());
        assert!(set.len <= capacity(set.slots.len()));
        assert_eq!(set.len(), hashes.len());
        let mut expected = hashes.clone();
        expected.sort_unstable();
        let mut held = set.into_vec();
        held.sort_unstable();
        assert_eq!(held, expected);
    }

    #[test]
    fn the_first_slot_is_where_a_probe_starts() {
        let mut set = HashSet64::default();
        assert_eq!(set.first_slot(0x1234), 0, "no table yet");
        set.insert(0x1234);
        assert_eq!(set.first_slot(0x1234), 0x1234, "in its own slot");
        assert_eq!(set.first_slot(0x1235), 0, "the next slot is empty");
        assert_eq!(set.first_slot(0x5674), 0x1234, "another hash's first slot");
    }

    #[test]
    fn it_fills_its_table_to_the_capacity_before_it_doubles() {
        let mut set = HashSet64::default();
        for h in 1..=capacity(64) as u64 {
            set.insert(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert_eq!(set.slots.len(), 64);
        set.insert(0x1234_5678);
        assert_eq!(set.slots.len(), 128);
        assert_eq!(peak_bytes(128), 1536);
    }
}
