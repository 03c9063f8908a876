//! Compression of stored blobs and the integrity check on every read.

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
    if let Ok(compressed) = zstd::bulk::compress(&raw, level)
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
            let raw = zstd::bulk::decompress(&stored, capacity)
                .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
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

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 1i32..4) {
            let raw = Bytes::from(data);
            let e = encode(Hash::of(&raw), raw.clone(), level);
            prop_assert_eq!(decode(e.hash, e.codec, e.raw_len, e.stored).unwrap(), raw);
        }
    }
}
