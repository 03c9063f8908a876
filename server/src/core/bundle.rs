//! Session bundles: the portable, self-checking file of ExportSession and ImportSession.
//!
//! ```text
//! "CKPTBNDL"  version: u32 LE
//! frame*      length: u32 LE, then a protobuf `Record` of that length
//! ```
//! Records come in this order: one `Session`, the `Blob`s (manifest pages and chunks, stored
//! bytes exactly as in the store, so nothing is recompressed), the `Checkpoint`s in commit
//! order, the `Branch`es and `Tag`s, and a final `End` holding the record count and the BLAKE3 hash of
//! every byte before the `End` frame. Readers verify each blob's hash and the final checksum
//! before anything is committed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use super::hash::Hash;

pub const MAGIC: &[u8; 8] = b"CKPTBNDL";
pub const VERSION: u32 = 1;
/// Largest frame a reader accepts: a manifest page of a 1 GiB value is under 1 MiB, a chunk
/// under 256 KiB; 64 MiB leaves room without letting a bad length exhaust memory.
const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Clone, PartialEq, prost::Message)]
struct RecordMsg {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Session(SessionMsg),
    #[prost(message, tag = "2")]
    Blob(BlobMsg),
    #[prost(message, tag = "3")]
    Checkpoint(CheckpointMsg),
    #[prost(message, tag = "4")]
    Branch(BranchMsg),
    #[prost(message, tag = "5")]
    End(EndMsg),
    #[prost(message, tag = "6")]
    Tag(TagMsg),
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionMsg {
    #[prost(string, tag = "1")]
    name: String,
}

/// A blob as stored: `codec` and `stored` bytes, which decode to `raw_len` bytes hashing to
/// `hash`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobMsg {
    #[prost(bytes = "vec", tag = "1")]
    pub hash: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    #[prost(uint32, tag = "3")]
    pub codec: u32,
    #[prost(uint64, tag = "4")]
    pub raw_len: u64,
    #[prost(bytes = "bytes", tag = "5")]
    pub stored: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckpointMsg {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub branch: String,
    #[prost(string, repeated, tag = "3")]
    pub parents: Vec<String>,
    #[prost(uint64, tag = "4")]
    pub generation: u64,
    /// Microseconds since the Unix epoch.
    #[prost(int64, tag = "5")]
    pub created_at_micros: i64,
    #[prost(string, tag = "6")]
    pub metadata: String,
    #[prost(string, tag = "7")]
    pub message: String,
    #[prost(bytes = "vec", tag = "8")]
    pub manifest_root: Vec<u8>,
    #[prost(uint64, tag = "9")]
    pub entry_count: u64,
    #[prost(uint64, tag = "10")]
    pub logical_bytes: u64,
    #[prost(uint64, tag = "11")]
    pub stored_bytes: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BranchMsg {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub head: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TagMsg {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub checkpoint: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EndMsg {
    #[prost(uint64, tag = "1")]
    records: u64,
    #[prost(bytes = "vec", tag = "2")]
    checksum: Vec<u8>,
}

/// One record of a bundle.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Session(String),
    Blob(BlobMsg),
    Checkpoint(CheckpointMsg),
    Branch(BranchMsg),
    Tag(TagMsg),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a checkpointd bundle (bad magic)")]
    BadMagic,
    #[error("bundle version {0} is not supported (this server reads version {VERSION})")]
    Version(u32),
    #[error("bundle frame of {0} bytes exceeds the limit")]
    FrameTooLarge(usize),
    #[error("bundle record {0} is malformed: {1}")]
    Malformed(u64, String),
    #[error("bundle checksum does not match: the file is damaged")]
    Checksum,
    #[error("bundle ends before its end record: the file is truncated")]
    Truncated,
    #[error("bytes follow the bundle's end record")]
    TrailingBytes,
}

/// Writes a bundle, frame by frame; take the bytes out as they accumulate.
#[derive(Debug)]
pub struct BundleWriter {
    out: BytesMut,
    hasher: blake3::Hasher,
    records: u64,
}

impl Default for BundleWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BundleWriter {
    pub fn new() -> Self {
        let mut out = BytesMut::new();
        out.put_slice(MAGIC);
        out.put_u32_le(VERSION);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&out);
        Self {
            out,
            hasher,
            records: 0,
        }
    }

    pub fn push(&mut self, record: Record) {
        let kind = match record {
            Record::Session(name) => Kind::Session(SessionMsg { name }),
            Record::Blob(b) => Kind::Blob(b),
            Record::Checkpoint(c) => Kind::Checkpoint(c),
            Record::Branch(b) => Kind::Branch(b),
            Record::Tag(t) => Kind::Tag(t),
        };
        let frame = frame(&RecordMsg { kind: Some(kind) });
        self.hasher.update(&frame);
        self.out.put_slice(&frame);
        self.records += 1;
    }

    /// Bytes written so far.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Takes the bytes written so far.
    pub fn take(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// Appends the end record and returns the remaining bytes.
    pub fn finish(mut self) -> Bytes {
        let checksum = self.hasher.finalize().as_bytes().to_vec();
        let end = RecordMsg {
            kind: Some(Kind::End(EndMsg {
                records: self.records,
                checksum,
            })),
        };
        self.out.put_slice(&frame(&end));
        self.out.freeze()
    }
}

fn frame(msg: &RecordMsg) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.put_u32_le(body.len() as u32);
    out.extend_from_slice(&body);
    out
}

/// Reads a bundle from pieces of any size, verifying as it goes.
#[derive(Debug)]
pub struct BundleReader {
    buf: BytesMut,
    hasher: blake3::Hasher,
    header_read: bool,
    records: u64,
    ended: bool,
}

impl Default for BundleReader {
    fn default() -> Self {
        Self::new()
    }
}

impl BundleReader {
    pub fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            hasher: blake3::Hasher::new(),
            header_read: false,
            records: 0,
            ended: false,
        }
    }

    /// Adds bytes and returns the records they complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Record>, BundleError> {
        if self.ended && !data.is_empty() {
            return Err(BundleError::TrailingBytes);
        }
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        if !self.header_read {
            if self.buf.len() < 12 {
                return Ok(out);
            }
            if &self.buf[..8] != MAGIC {
                return Err(BundleError::BadMagic);
            }
            let version = u32::from_le_bytes(self.buf[8..12].try_into().expect("4 bytes"));
            if version != VERSION {
                return Err(BundleError::Version(version));
            }
            self.hasher.update(&self.buf[..12]);
            self.buf.advance(12);
            self.header_read = true;
        }
        while let Some(record) = self.next_frame()? {
            out.push(record);
        }
        Ok(out)
    }

    fn next_frame(&mut self) -> Result<Option<Record>, BundleError> {
        if self.ended || self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(BundleError::FrameTooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf.split_to(4 + len);
        let index = self.records;
        let msg = RecordMsg::decode(&frame[4..])
            .map_err(|e| BundleError::Malformed(index, e.to_string()))?;
        let record = match msg.kind {
            Some(Kind::End(end)) => {
                if end.checksum != self.hasher.finalize().as_bytes() || end.records != self.records
                {
                    return Err(BundleError::Checksum);
                }
                self.ended = true;
                if !self.buf.is_empty() {
                    return Err(BundleError::TrailingBytes);
                }
                return Ok(None);
            }
            Some(Kind::Session(s)) => Record::Session(s.name),
            Some(Kind::Blob(b)) => Record::Blob(b),
            Some(Kind::Checkpoint(c)) => Record::Checkpoint(c),
            Some(Kind::Branch(b)) => Record::Branch(b),
            Some(Kind::Tag(t)) => Record::Tag(t),
            None => return Err(BundleError::Malformed(index, "empty record".into())),
        };
        self.hasher.update(&frame);
        self.records += 1;
        Ok(Some(record))
    }

    /// Checks that the bundle ended with a valid end record.
    pub fn finish(&self) -> Result<(), BundleError> {
        if self.ended {
            Ok(())
        } else {
            Err(BundleError::Truncated)
        }
    }
}

/// The hash a blob record claims, if well formed.
pub fn blob_hash(blob: &BlobMsg) -> Option<Hash> {
    Hash::from_slice(&blob.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        let mut w = BundleWriter::new();
        w.push(Record::Session("s".into()));
        w.push(Record::Blob(BlobMsg {
            hash: vec![1; 32],
            kind: 0,
            codec: 0,
            raw_len: 3,
            stored: Bytes::from_static(b"abc"),
        }));
        w.push(Record::Branch(BranchMsg {
            name: "main".into(),
            head: "x".into(),
        }));
        let mut out = BytesMut::from(&w.take()[..]);
        out.extend_from_slice(&w.finish());
        out.freeze()
    }

    fn read_all(bytes: &[u8], piece: usize) -> Result<Vec<Record>, BundleError> {
        let mut r = BundleReader::new();
        let mut records = Vec::new();
        for part in bytes.chunks(piece) {
            records.extend(r.feed(part)?);
        }
        r.finish()?;
        Ok(records)
    }

    #[test]
    fn a_bundle_reads_back_in_any_piece_size() {
        let bytes = sample();
        for piece in [1, 3, 7, 1000] {
            let records = read_all(&bytes, piece).unwrap();
            assert_eq!(records.len(), 3);
            assert_eq!(records[0], Record::Session("s".into()));
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[i] ^= 0x01;
            assert!(
                read_all(&damaged, 5).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused() {
        let bytes = sample();
        assert_eq!(
            read_all(&bytes[..bytes.len() - 1], 4),
            Err(BundleError::Truncated)
        );
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(read_all(&longer, 4), Err(BundleError::TrailingBytes));
        assert_eq!(read_all(b"NOTABUNDLE..", 4), Err(BundleError::BadMagic));
    }
}
