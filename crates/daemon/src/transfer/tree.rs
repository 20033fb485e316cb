//! A file's BLAKE3 hash, built from the hashes of its chunks, so that each chunk is checked
//! as it arrives and the file's hash costs no second pass over the data. A chunk of
//! [`CHUNK`] bytes is a whole subtree of BLAKE3's tree; chunks' chaining values merge into
//! the root exactly as BLAKE3's own incremental hasher does, so the result is the hash
//! `b3sum` prints.

use blake3::{
    Hasher,
    hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root},
};
use loopsy_wire::transfer::{CHUNK, Digest};

/// The hash that travels with the chunk at `offset` of a file of `size` bytes: its chaining
/// value, or the file's root hash when the file is a single chunk.
pub fn chunk_hash(data: &[u8], offset: u64, size: u64) -> Digest {
    chunk_hash_in(data, offset, size, CHUNK)
}

fn chunk_hash_in(data: &[u8], offset: u64, size: u64, chunk: usize) -> Digest {
    if size <= chunk as u64 {
        return *blake3::hash(data).as_bytes();
    }
    Hasher::new()
        .set_input_offset(offset)
        .update(data)
        .finalize_non_root()
}

/// Chunk hashes merged into the file's hash, in order.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    /// Completed subtrees, largest first: at most one per bit of the chunk count.
    stack: Vec<ChainingValue>,
    chunks: u64,
    /// Every chunk hash so far, folded into one: what [`Tree::digest`] returns.
    running: Hasher,
    /// The root when the file is a single chunk.
    single: Option<Digest>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next chunk's hash (from [`chunk_hash`]).
    pub fn push(&mut self, hash: Digest) {
        self.running.update(&hash);
        if self.chunks == 0 {
            self.single = Some(hash);
        }
        // Merge the subtrees this chunk completes, but lazily: the last merge must be the
        // root, and only the next chunk tells that one was not the last.
        while self.stack.len() > self.chunks.count_ones() as usize {
            self.merge_top();
        }
        self.stack.push(hash);
        self.chunks += 1;
    }

    fn merge_top(&mut self) {
        let (Some(right), Some(left)) = (self.stack.pop(), self.stack.pop()) else {
            return;
        };
        self.stack
            .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// A digest of the chunk hashes so far: two sides with equal digests hold the same
    /// prefix.
    pub fn digest(&self) -> Digest {
        *self.running.finalize().as_bytes()
    }

    /// The file's BLAKE3 hash.
    pub fn root(mut self) -> Digest {
        match self.chunks {
            0 => *blake3::hash(b"").as_bytes(),
            1 => self.single.unwrap_or_default(),
            _ => {
                while self.stack.len() > 2 {
                    self.merge_top();
                }
                *merge_subtrees_root(&self.stack[0], &self.stack[1], Mode::Hash).as_bytes()
            }
        }
    }
}

/// Hashes `data` as a file of chunks of `chunk` bytes (a power of two, at least BLAKE3's
/// 1 KiB): for tests with small chunks.
#[cfg(test)]
fn root_in_chunks(data: &[u8], chunk: usize) -> Digest {
    let mut tree = Tree::new();
    let size = data.len() as u64;
    for (i, part) in data.chunks(chunk).enumerate() {
        tree.push(chunk_hash_in(part, (i * chunk) as u64, size, chunk));
    }
    tree.root()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn matches_blake3_at_the_real_chunk_size() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 8 * CHUNK] {
            let bytes = data(len);
            assert_eq!(
                root_in_chunks(&bytes, CHUNK),
                *blake3::hash(&bytes).as_bytes(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn equal_prefixes_have_equal_digests() {
        let (a, b) = (data(5 * 1024), data(5 * 1024));
        let mut c = b.clone();
        c[4000] ^= 1;
        let digest = |bytes: &[u8]| {
            let mut tree = Tree::new();
            for (i, part) in bytes.chunks(1024).enumerate() {
                tree.push(chunk_hash_in(part, i as u64 * 1024, 1 << 20, 1024));
            }
            tree.digest()
        };
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Any length, any chunk size BLAKE3 allows: the merged root is BLAKE3's hash.
        #[test]
        fn merged_root_is_blake3(len in 0usize..40_000, shift in 0u32..4) {
            let bytes = data(len);
            proptest::prop_assert_eq!(
                root_in_chunks(&bytes, 1024 << shift),
                *blake3::hash(&bytes).as_bytes()
            );
        }
    }
}
