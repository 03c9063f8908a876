//! Content-defined chunking of values with FastCDC (v2020), fed incrementally so a value of any
//! size streams through with bounded memory.

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::FastCDC;

/// Smallest chunk FastCDC cuts (except a value's tail).
///
/// 16 KiB / 64 KiB / 256 KiB: agent-session values are mostly transcripts and files of a few
/// KiB to a few MiB that change by appends and local edits. Chunks this small let an append
/// rewrite ~64 KiB instead of megabytes, while a 1 MiB value still becomes only ~16 catalog
/// rows. Borg's 2 MiB average would make nearly every session value a single chunk.
pub const MIN_CHUNK: usize = 16 * 1024;
/// Average chunk size FastCDC aims for.
pub const AVG_CHUNK: usize = 64 * 1024;
/// Largest chunk FastCDC cuts.
pub const MAX_CHUNK: usize = 256 * 1024;

/// Splits one value into chunks as its bytes arrive.
///
/// Cut points depend only on the bytes since the previous cut, so feeding the value in pieces
/// gives exactly the chunks of chunking it whole.
#[derive(Debug, Default)]
pub struct Chunker {
    pending: BytesMut,
}

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns every chunk that is now final.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.pending.extend_from_slice(data);
        if self.pending.len() < MAX_CHUNK * 2 {
            return Vec::new();
        }
        self.cut(false)
    }

    /// Ends the value and returns its remaining chunks.
    pub fn finish(&mut self) -> Vec<Bytes> {
        self.cut(true)
    }

    fn cut(&mut self, last: bool) -> Vec<Bytes> {
        let mut cuts: Vec<(usize, usize)> =
            FastCDC::new(&self.pending, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
                .map(|c| (c.offset, c.length))
                .collect();
        if !last {
            // The final piece may still grow: keep it for the next call.
            cuts.pop();
        }
        let consumed: usize = cuts.iter().map(|(_, len)| len).sum();
        let mut taken = self.pending.split_to(consumed).freeze();
        cuts.iter().map(|(_, len)| taken.split_to(*len)).collect()
    }
}

/// Chunks a whole value at once.
pub fn chunk_all(value: &[u8]) -> Vec<Bytes> {
    let mut chunker = Chunker::new();
    let mut chunks = chunker.push(value);
    chunks.extend(chunker.finish());
    chunks
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_concatenate_to_the_value_and_respect_bounds() {
        let value = pseudo_random(3 * 1024 * 1024 + 17, 7);
        let chunks = chunk_all(&value);
        assert_eq!(chunks.concat(), value);
        assert!(chunks.len() > 8, "3 MiB gave only {} chunks", chunks.len());
        for chunk in &chunks[..chunks.len() - 1] {
            assert!((MIN_CHUNK..=MAX_CHUNK).contains(&chunk.len()));
        }
    }

    #[test]
    fn empty_value_has_no_chunks() {
        assert!(chunk_all(b"").is_empty());
    }

    #[test]
    fn an_insert_near_the_start_leaves_later_chunks_unchanged() {
        let value = pseudo_random(2 * 1024 * 1024, 3);
        let mut edited = value.clone();
        edited.splice(1000..1000, b"inserted".iter().copied());
        let before = chunk_all(&value);
        let after = chunk_all(&edited);
        let shared = after.iter().filter(|c| before.contains(c)).count();
        assert!(
            shared + 2 >= after.len(),
            "only {shared} of {} chunks shared",
            after.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn piecewise_feeding_matches_whole_chunking(
            len in 0usize..1_500_000,
            seed in any::<u64>(),
            piece in 1usize..300_000,
        ) {
            let value = pseudo_random(len, seed);
            let mut chunker = Chunker::new();
            let mut chunks = Vec::new();
            for part in value.chunks(piece) {
                chunks.extend(chunker.push(part));
            }
            chunks.extend(chunker.finish());
            prop_assert_eq!(chunks, chunk_all(&value));
        }
    }
}
