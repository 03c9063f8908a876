//! Request payloads: states of an exact total size split over a number of keys, shaped like
//! agent transcripts (compressible JSON lines) or incompressible, and made unique per request.
//!
//! Uniqueness matters because the server deduplicates chunks: sending the same bytes again
//! would measure a hash lookup instead of a write. Each key's value is built once as a template
//! with stamp slots; a request copies the template and writes its nonce into every slot.

pub(crate) mod json;
pub(crate) mod rng;

use bytes::Bytes;
use ckpt_client::State;
use clap::ValueEnum;
use serde::Serialize;

use rng::SplitMix64;

/// Width of a stamp: the request nonce as 16 hex digits.
pub(crate) const STAMP_LEN: usize = 16;

/// Most bytes between two stamps. The server cuts values into content-defined chunks of at
/// least 16 KiB (except a value's tail), so a stamp every KiB lands in every chunk and no chunk
/// of one request matches another request's.
pub(crate) const STAMP_EVERY: usize = 1024;

/// What the values look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Shape {
    /// Agent-transcript-like JSON lines (~4x with zstd).
    Json,
    /// Random bytes, incompressible.
    Random,
}

/// How to build a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PayloadSpec {
    /// Total bytes of the state, over all keys.
    pub(crate) size: u64,
    /// Number of keys the state is split into; at least 1.
    pub(crate) keys: u32,
    /// What the values look like.
    pub(crate) shape: Shape,
    /// Send the same bytes in every request instead of unique ones.
    pub(crate) same: bool,
}

/// One key's value before stamping.
#[derive(Debug)]
struct Template {
    key: String,
    bytes: Vec<u8>,
    stamps: Vec<usize>,
}

/// Builds the states and values of requests from per-key templates.
#[derive(Debug)]
pub(crate) struct Payload {
    templates: Vec<Template>,
    seed: u64,
    same: bool,
}

impl Payload {
    /// Builds the templates for `spec`. `seed` is mixed into every nonce, so that two runs
    /// against the same server do not deduplicate against each other.
    pub(crate) fn new(spec: PayloadSpec, seed: u64) -> Self {
        let keys = u64::from(spec.keys.max(1));
        let templates = (0..keys)
            .map(|i| {
                let len = (spec.size / keys + u64::from(i < spec.size % keys)) as usize;
                template(spec.shape, i, len)
            })
            .collect();
        Payload {
            templates,
            seed,
            same: spec.same,
        }
    }

    /// Number of keys in a state.
    pub(crate) fn key_count(&self) -> usize {
        self.templates.len()
    }

    /// Total bytes of a state.
    pub(crate) fn state_bytes(&self) -> u64 {
        self.templates.iter().map(|t| t.bytes.len() as u64).sum()
    }

    /// Bytes of key `index`'s value.
    pub(crate) fn value_bytes(&self, index: usize) -> u64 {
        self.templates[index].bytes.len() as u64
    }

    /// The name of key `index`.
    pub(crate) fn key(&self, index: usize) -> &str {
        &self.templates[index].key
    }

    /// The value of key `index` for request `request`: unique per request unless the payload
    /// was built with `same`.
    pub(crate) fn value(&self, index: usize, request: u64) -> Bytes {
        let template = &self.templates[index];
        let nonce = self.nonce(request);
        let mut bytes = template.bytes.clone();
        for &at in &template.stamps {
            let width = STAMP_LEN.min(bytes.len() - at);
            bytes[at..at + width].copy_from_slice(&nonce[STAMP_LEN - width..]);
        }
        Bytes::from(bytes)
    }

    /// The whole state for request `request`.
    pub(crate) fn state(&self, request: u64) -> State {
        (0..self.templates.len())
            .map(|i| (self.key(i).to_owned(), self.value(i, request)))
            .collect()
    }

    /// The stamp of a request: its number offset by the run's seed, in hex, so that the last
    /// digits change from one request to the next.
    fn nonce(&self, request: u64) -> [u8; STAMP_LEN] {
        let n = if self.same {
            self.seed
        } else {
            self.seed.wrapping_add(request)
        };
        let mut out = [0u8; STAMP_LEN];
        out.copy_from_slice(format!("{n:016x}").as_bytes());
        out
    }
}

/// The template of key `index`; the seed depends on the index so that keys differ from each
/// other (identical values would deduplicate within one state).
fn template(shape: Shape, index: u64, len: usize) -> Template {
    let seed = 0x5EED_0000 ^ index;
    match shape {
        Shape::Json => {
            let (bytes, stamps) = json::transcript(len, seed);
            Template {
                key: format!("transcript/{index:06}.jsonl"),
                bytes,
                stamps,
            }
        }
        Shape::Random => {
            let mut bytes = vec![0u8; len];
            SplitMix64::new(seed).fill(&mut bytes);
            Template {
                key: format!("blob/{index:06}.bin"),
                bytes,
                stamps: (0..len).step_by(STAMP_EVERY).collect(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(size: u64, keys: u32, shape: Shape, same: bool) -> Payload {
        let spec = PayloadSpec {
            size,
            keys,
            shape,
            same,
        };
        Payload::new(spec, 42)
    }

    fn ratio(data: &[u8]) -> f64 {
        data.len() as f64 / zstd::bulk::compress(data, 3).unwrap().len() as f64
    }

    #[test]
    fn sizes_are_exact_and_spread_over_keys() {
        for shape in [Shape::Json, Shape::Random] {
            for (size, keys) in [
                (0, 1),
                (1, 1),
                (15, 1),
                (10_000, 1),
                (1_048_579, 1),
                (1003, 10),
            ] {
                let p = payload(size, keys, shape, false);
                let state = p.state(7);
                let total: u64 = state.values().map(|v| v.len() as u64).sum();
                assert_eq!(total, size, "{shape:?} {size} {keys}");
                assert_eq!(state.len(), keys as usize);
                assert_eq!(p.state_bytes(), size);
                let lens: Vec<usize> = state.values().map(|v| v.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn every_request_gets_different_bytes_in_every_kib() {
        for shape in [Shape::Json, Shape::Random] {
            let p = payload(100_000, 2, shape, false);
            let (a, b) = (p.value(1, 1), p.value(1, 2));
            assert_eq!(a.len(), b.len());
            for (x, y) in a.chunks(2 * STAMP_EVERY).zip(b.chunks(2 * STAMP_EVERY)) {
                assert_ne!(
                    x, y,
                    "{shape:?}: a 2 KiB window is identical in two requests"
                );
            }
            assert_ne!(p.value(0, 1), p.value(1, 1), "keys must differ");
            assert_eq!(p.value(0, 5), p.value(0, 5));
        }
    }

    #[test]
    fn tiny_values_still_differ_per_request() {
        for shape in [Shape::Json, Shape::Random] {
            let p = payload(3, 1, shape, false);
            assert_ne!(p.value(0, 1), p.value(0, 2));
        }
    }

    #[test]
    fn same_payload_repeats_the_bytes() {
        let p = payload(20_000, 1, Shape::Json, true);
        assert_eq!(p.value(0, 1), p.value(0, 2));
    }

    #[test]
    fn json_compresses_like_a_transcript_and_random_does_not() {
        let json = payload(1 << 20, 1, Shape::Json, false).value(0, 1);
        let json_ratio = ratio(&json);
        assert!(
            (3.5..5.5).contains(&json_ratio),
            "json ratio {json_ratio:.2}"
        );

        let random = payload(1 << 20, 1, Shape::Random, false).value(0, 1);
        let random_ratio = ratio(&random);
        assert!(random_ratio < 1.01, "random ratio {random_ratio:.3}");
    }
}
