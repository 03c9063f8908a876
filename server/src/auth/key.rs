//! What an API key looks like: `ckpt_<id>_<secret>`, the id 16 and the secret 64 lowercase hex
//! digits. The `ckpt_` prefix lets secret scanners and people recognise a key; the id names it
//! in logs and listings without revealing it.
//!
//! The secret is 256 random bits, so a single fast hash is enough: no dictionary can guess it,
//! and a slow password hash would only cost every call time. The catalog keeps BLAKE3 (in
//! key-derivation mode, so the hash serves no other purpose) of the whole key text, and the
//! comparison runs in constant time.

use crate::catalog::{NewApiKey, Role};

/// Every key starts with this.
pub const PREFIX: &str = "ckpt_";

/// Random bytes in a key's public id (16 hex digits): collisions are refused by the catalog,
/// and at 64 bits one is not expected before billions of keys.
const ID_BYTES: usize = 8;
/// Random bytes in a key's secret (64 hex digits).
const SECRET_BYTES: usize = 32;

/// BLAKE3 key-derivation context: a hash made for API keys matches nothing else.
const HASH_CONTEXT: &str = "checkpointd 2026-12-04 api key v1";

/// A freshly made key: its text (shown once, never stored) and what the catalog stores.
#[derive(Debug)]
pub struct GeneratedKey {
    pub text: String,
    pub record: NewApiKey,
}

/// Makes a key for `tenant` with `role` from the operating system's random source.
pub fn generate(tenant: &str, role: Role, name: &str) -> Result<GeneratedKey, getrandom::Error> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let id = hex::encode(id);
    let text = format!("{PREFIX}{id}_{}", hex::encode(secret));
    let record = NewApiKey {
        secret_hash: hash(&text),
        id,
        tenant: tenant.to_owned(),
        role,
        name: name.to_owned(),
    };
    Ok(GeneratedKey { text, record })
}

/// The public id of a well-formed key text; `None` for anything else.
pub fn key_id(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_BYTES * 2
        && secret.len() == SECRET_BYTES * 2
        && id.bytes().chain(secret.bytes()).all(is_lower_hex);
    well_formed.then_some(id)
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// What the catalog keeps of a key.
pub fn hash(text: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    hasher.update(text.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Whether `text` is the key whose hash is `stored`, compared in constant time.
pub fn matches(text: &str, stored: &[u8; 32]) -> bool {
    let mut hasher = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    hasher.update(text.as_bytes());
    // blake3::Hash's equality is constant-time.
    hasher.finalize() == blake3::Hash::from_bytes(*stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_matches_only_its_own_hash() {
        let key = generate("acme", Role::Write, "ci").unwrap();
        assert!(key.text.starts_with("ckpt_"), "{}", key.text);
        assert_eq!(key.text.len(), 5 + 16 + 1 + 64);
        assert_eq!(key_id(&key.text), Some(key.record.id.as_str()));
        assert!(matches(&key.text, &key.record.secret_hash));
        assert_eq!(key.record.tenant, "acme");
        assert_eq!(key.record.role, Role::Write);

        let other = generate("acme", Role::Write, "").unwrap();
        assert_ne!(key.record.id, other.record.id);
        assert!(!matches(&other.text, &key.record.secret_hash));
        let mut tampered = key.text.clone();
        tampered.pop();
        tampered.push(if key.text.ends_with('0') { '1' } else { '0' });
        assert!(!matches(&tampered, &key.record.secret_hash));
    }

    #[test]
    fn the_hash_is_not_the_secret() {
        let key = generate("t", Role::Read, "").unwrap();
        let secret = key.text.rsplit('_').next().unwrap();
        assert_ne!(hex::encode(key.record.secret_hash), secret);
        assert_ne!(
            key.record.secret_hash,
            *blake3::hash(key.text.as_bytes()).as_bytes()
        );
    }

    #[test]
    fn malformed_keys_have_no_id() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        assert_eq!(key_id(&format!("ckpt_{id}_{secret}")), Some(id));
        for bad in [
            String::new(),
            "ckpt_".to_owned(),
            format!("ckpx_{id}_{secret}"),
            format!("ckpt_{id}{secret}"),
            format!("ckpt_{id}_{secret}0"),
            format!("ckpt_{}_{secret}", &id[1..]),
            format!("ckpt_{}_{secret}", id.to_uppercase()),
            format!("ckpt_{id}_{}", "zz".repeat(32)),
            format!("ckpt_{id}_{}", "ab_".repeat(21)),
        ] {
            assert_eq!(key_id(&bad), None, "{bad:?}");
        }
    }
}
