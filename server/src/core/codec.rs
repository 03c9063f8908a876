//! Compression of stored blobs and the integrity check on every read.

use std::cell::RefCell;

use bytes::Bytes;

use super::hash::Hash;

/// How a blob's bytes are stored. The number is what the catalog records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_i16(value: i16) -> Option<Self> {
        match value {
            0 => Some(Self::Raw),
            1 => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// A blob ready to be stored: its hash, raw length, codec and stored bytes.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub hash: Hash,
    pub raw_len: u64,
    pub codec: Codec,
    pub stored: Bytes,
}

/// Compresses `raw` (whose hash is `hash`) with zstd at `level` and keeps the result only when
/// it saves at least 1/16 of the size; incompressible data (already compressed files, random
/// bytes) is stored raw so reads skip a pointless decompression.
pub fn encode(hash: Hash, raw: Bytes, level: i32) -> Encoded {
    let raw_len = raw.len() as u64;
    if let Ok(compressed) = compress(&raw, level)
        && compressed.len() + raw.len() / 16 < raw.len()
    {
        return Encoded {
            hash,
            raw_len,
            codec: Codec::Zstd,
            stored: Bytes::from(compressed),
        };
    }
    Encoded {
        hash,
        raw_len,
        codec: Codec::Raw,
        stored: raw,
    }
}

// One zstd context per thread, reused. Making a context costs more than compressing or
// decompressing a small blob (it allocates and clears its tables), and a state of 1,000 small
// values made 1,000 of them per create and per load: 35-40 % of the server's time in profiles.
thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some((current, compressor)) if *current == level => compressor,
            _ => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
        };
        compressor.compress(raw)
    })
}

fn decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(decompressor) => decompressor,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(stored, capacity)
    })
}

/// Why stored bytes could not be turned back into the blob they claim to be.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("blob does not decompress: {0}")]
    Corrupt(String),
    #[error("blob hashes to {actual}, expected {expected}")]
    HashMismatch { expected: Hash, actual: Hash },
}

/// Decompresses `stored` and checks that it hashes to `expected`.
pub fn decode(
    expected: Hash,
    codec: Codec,
    raw_len: u64,
    stored: Bytes,
) -> Result<Bytes, DecodeError> {
    let raw = match codec {
        Codec::Raw => stored,
        Codec::Zstd => {
            let capacity =
                usize::try_from(raw_len).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            let raw =
                decompress(&stored, capacity).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            Bytes::from(raw)
        }
    };
    let actual = Hash::of(&raw);
    if actual != expected {
        return Err(DecodeError::HashMismatch { expected, actual });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn compressible_data_is_stored_compressed() {
        let raw = Bytes::from("agent said hello. ".repeat(1000));
        let encoded = encode(Hash::of(&raw), raw.clone(), 3);
        assert_eq!(encoded.codec, Codec::Zstd);
        assert!(encoded.stored.len() < raw.len() / 10);
        let decoded = decode(encoded.hash, encoded.codec, encoded.raw_len, encoded.stored).unwrap();
        assert_eq!(decoded, raw);
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let raw = Bytes::from(vec![7u8; 4096]);
        let encoded = encode(Hash::of(&raw), raw, 3);
        let mut damaged = encoded.stored.to_vec();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x40;
        let result = decode(
            encoded.hash,
            encoded.codec,
            encoded.raw_len,
            Bytes::from(damaged),
        );
        assert!(result.is_err());
    }

    #[test]
    fn raw_blobs_are_verified_too() {
        let encoded = encode(Hash::of(b"x"), Bytes::from_static(b"x"), 3);
        assert_eq!(encoded.codec, Codec::Raw);
        let err = decode(encoded.hash, Codec::Raw, 1, Bytes::from_static(b"y")).unwrap_err();
        assert!(matches!(err, DecodeError::HashMismatch { .. }));
    }

    #[test]
    fn reused_contexts_follow_the_level_and_survive_bad_input() {
        let raw = Bytes::from("tool output, line after line. ".repeat(2000));
        let fast = encode(Hash::of(&raw), raw.clone(), 1);
        let small = encode(Hash::of(&raw), raw.clone(), 19);
        let fast_again = encode(Hash::of(&raw), raw.clone(), 1);
        // The thread's compressor switched level and back: the outputs say which level ran.
        assert!(small.stored.len() < fast.stored.len());
        assert_eq!(fast_again.stored, fast.stored);

        // A frame that claims more than its capacity, then garbage: both refused...
        assert!(decode(fast.hash, Codec::Zstd, 10, fast.stored.clone()).is_err());
        let garbage = Bytes::from_static(b"not a zstd frame at all");
        assert!(decode(fast.hash, Codec::Zstd, 4096, garbage).is_err());
        // ...and the thread's decompressor still decodes a good blob afterwards.
        let decoded = decode(small.hash, small.codec, small.raw_len, small.stored).unwrap();
        assert_eq!(decoded, raw);
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 1i32..4) {
            let raw = Bytes::from(data);
            let e = encode(Hash::of(&raw), raw.clone(), level);
            prop_assert_eq!(decode(e.hash, e.codec, e.raw_len, e.stored).unwrap(), raw);
        }
    }
}
