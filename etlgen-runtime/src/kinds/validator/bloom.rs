//! The filter dedup checks each key against once its exact set is full.
//!
//! A split block Bloom filter, the layout Parquet and Impala use: a key sets one bit in each
//! of the eight 32-bit words of one 32-byte block, so a check reads one cache line. It says
//! either that a key is new for certain or that it may have been seen; `seen` decides the
//! second kind exactly at the end of the file.
//!
//! Written here rather than taken from a crate for the same reason as `hashes`: the
//! validator reads each key's block ahead of the rows' checks (`Seen::warm`) from the hash
//! it has already computed, and a crate's filter hashes the key itself and keeps its
//! blocks private. The hashes are SipHash's, already uniform, so the block comes from the
//! high 32 bits and the bits from the low 32.

/// The odd constants Parquet's split block Bloom filter multiplies a key by, one per word.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// The bytes of a block.
pub(super) const BLOCK_BYTES: usize = 32;

/// Eight words, aligned to their size so that a block never straddles two cache lines: a
/// large allocation starts 16 bytes past a page, and with the words' own alignment half
/// the blocks did, so the line read ahead was only half of what a check then read.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(32))]
struct Block([u32; 8]);

/// A filter of a fixed number of blocks.
#[derive(Debug)]
pub(super) struct Bloom {
    blocks: Vec<Block>,
}

impl Bloom {
    /// A filter of `bytes`, rounded down to whole blocks, and at least one block.
    pub(super) fn new(bytes: usize) -> Self {
        Self {
            blocks: vec![Block::default(); (bytes / BLOCK_BYTES).max(1)],
        }
    }

    /// The block `hash` goes to: the high 32 bits scaled to the number of blocks.
    fn block(&self, hash: u64) -> usize {
        // At most `blocks.len() - 1`, which is a `usize` (truncation impossible).
        (((hash >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    /// The first word of `hash`'s block, read so that a check soon after finds the line in
    /// the cache (see `hashes::HashSet64::first_slot`).
    pub(super) fn first_word(&self, hash: u64) -> u32 {
        self.blocks[self.block(hash)].0[0]
    }

    /// Adds `hash`; whether it was new for certain (some bit of it was clear). `false`
    /// means the filter cannot tell: the hash, or other hashes setting the same bits, were
    /// added before.
    pub(super) fn insert(&mut self, hash: u64) -> bool {
        let at = self.block(hash);
        let block = &mut self.blocks[at];
        let mut new = false;
        for (word, bit) in block.0.iter_mut().zip(mask(hash)) {
            new |= *word & bit == 0;
            *word |= bit;
        }
        new
    }
}

/// One bit per word: the top five bits of the key times each salt (truncation intended:
/// the low 32 bits are the key).
fn mask(hash: u64) -> [u32; 8] {
    let key = hash as u32;
    SALT.map(|salt| 1 << (key.wrapping_mul(salt) >> 27))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(i: u64) -> u64 {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ i
    }

    #[test]
    fn a_hash_added_is_never_new_again() {
        let mut filter = Bloom::new(1 << 12);
        for i in 0..2000 {
            filter.insert(spread(i));
        }
        for i in 0..2000 {
            assert!(!filter.insert(spread(i)), "{i}");
        }
    }

    #[test]
    fn a_roomy_filter_tells_most_new_hashes_apart() {
        // 16 bits a hash, as the default budget has for the benchmark's 1 GB file.
        let mut filter = Bloom::new(20_000 * 2);
        let new = (0..20_000).filter(|&i| filter.insert(spread(i))).count();
        assert!(new > 19_900, "{new} of 20000 told new");
    }

    #[test]
    fn a_key_sets_one_bit_in_each_word_of_one_block() {
        let mut filter = Bloom::new(4 * BLOCK_BYTES);
        let hash = 0x8000_0000_1234_5678;
        assert!(filter.insert(hash));
        let set: Vec<_> = (filter.blocks.iter().enumerate())
            .filter(|(_, b)| b.0.iter().any(|&w| w != 0))
            .map(|(at, b)| (at, b.0.iter().map(|w| w.count_ones()).collect::<Vec<_>>()))
            .collect();
        assert_eq!(set, [(2, vec![1; 8])], "the high bits' half-way block");
        assert_eq!(filter.first_word(hash), filter.blocks[2].0[0]);
        assert_eq!(Bloom::new(0).blocks.len(), 1);
        let lines = (filter.blocks.as_ptr() as usize % 64) + BLOCK_BYTES;
        assert!(lines <= 64, "a block within one cache line");
    }
}
