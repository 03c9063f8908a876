//! Three-way merge of states, key by key.
//!
//! Per key, against the merge base: changed on one side only → that side; the same change on
//! both → taken; different changes → a conflict (never a silent delete or revert). With
//! several merge bases (criss-cross histories) the bases are first merged into a virtual base,
//! recursively, as git's recursive strategy does; a key that conflicts while building the
//! virtual base gets a value no real state can hold, so the final merge takes it only when
//! both sides agree on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::diff::{self, Change, value_id};
use super::hash::Hash;
use super::manifest::{self, ChunkRef, LeafEntry, ManifestError, Page, PageLoader, Root};

/// How a key conflicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// Both sides changed the value, differently.
    BothModified,
    /// Ours changed it, theirs deleted it.
    ModifiedDeleted,
    /// Ours deleted it, theirs changed it.
    DeletedModified,
    /// Both sides added the key with different values.
    BothAdded,
}

/// A key the two sides changed differently. Hashes are value identities
/// ([`diff::value_id`]); `None` where the side has no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub key: String,
    pub kind: ConflictKind,
    pub base: Option<Hash>,
    pub ours: Option<Hash>,
    pub theirs: Option<Hash>,
}

/// What to do with a conflicting key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolve {
    Ours,
    Theirs,
    Delete,
    /// A given value (already chunked and stored by the caller).
    Value(LeafEntry),
}

/// The outcome of merging theirs into ours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreeWay {
    /// Edits to apply to ours: theirs' changes that do not conflict.
    pub edits: BTreeMap<String, Option<LeafEntry>>,
    pub conflicts: Vec<Conflict>,
    /// Where a conflicting key stands on each side, for resolutions.
    pub sides: HashMap<String, (Option<LeafEntry>, Option<LeafEntry>)>,
}

/// Combines the changes base→ours and base→theirs.
pub fn combine(base_to_ours: Vec<Change>, base_to_theirs: Vec<Change>) -> ThreeWay {
    let ours: HashMap<String, Change> = base_to_ours
        .into_iter()
        .map(|c| (c.key().to_owned(), c))
        .collect();
    let mut out = ThreeWay::default();
    for theirs in base_to_theirs {
        let key = theirs.key().to_owned();
        let Some(mine) = ours.get(&key) else {
            out.edits.insert(key, theirs.after().cloned());
            continue;
        };
        if mine.after() == theirs.after() {
            continue;
        }
        let kind = match (mine, &theirs) {
            (Change::Added(_), Change::Added(_)) => ConflictKind::BothAdded,
            (Change::Removed(_), _) => ConflictKind::DeletedModified,
            (_, Change::Removed(_)) => ConflictKind::ModifiedDeleted,
            _ => ConflictKind::BothModified,
        };
        let base = match &theirs {
            Change::Removed(old) | Change::Modified { old, .. } => Some(value_id(old)),
            Change::Added(_) => None,
        };
        out.conflicts.push(Conflict {
            key: key.clone(),
            kind,
            base,
            ours: mine.after().map(value_id),
            theirs: theirs.after().map(value_id),
        });
        out.sides
            .insert(key, (mine.after().cloned(), theirs.after().cloned()));
    }
    out.conflicts.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The value a virtual base gives a key whose merge conflicted: unequal to every real value.
fn conflict_marker(key: &str) -> LeafEntry {
    let hash = Hash::of(format!("checkpointd virtual-base conflict\0{key}").as_bytes());
    LeafEntry {
        key: key.to_owned(),
        size: 0,
        chunks: vec![ChunkRef { hash, len: 0 }],
    }
}

/// Reads stored pages, plus pages of trees built in memory (virtual bases).
pub struct Overlay<'a, L> {
    inner: &'a L,
    pages: std::sync::Mutex<HashMap<Hash, Arc<Page>>>,
}

impl<L> std::fmt::Debug for Overlay<'_, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay").finish_non_exhaustive()
    }
}

impl<'a, L: PageLoader> Overlay<'a, L> {
    pub fn new(inner: &'a L) -> Self {
        Self {
            inner,
            pages: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn add(&self, pages: Vec<manifest::NewPage>) -> Result<(), ManifestError> {
        let mut map = self.pages.lock().expect("overlay lock");
        for page in pages {
            map.insert(page.hash, Arc::new(Page::decode(page.hash, &page.bytes)?));
        }
        Ok(())
    }

    /// Merges `theirs` into `ours` over `base` in memory, marking conflicts, for a virtual base.
    pub async fn virtual_merge(
        &self,
        base: Option<&Root>,
        ours: Option<&Root>,
        theirs: Option<&Root>,
    ) -> Result<Option<Root>, ManifestError> {
        let combined = combine(
            diff::diff(self, base, ours).await?,
            diff::diff(self, base, theirs).await?,
        );
        let mut edits = combined.edits;
        for conflict in combined.conflicts {
            edits.insert(conflict.key.clone(), Some(conflict_marker(&conflict.key)));
        }
        let (root, pages) = manifest::update(self, ours, edits).await?;
        self.add(pages)?;
        Ok(root)
    }
}

impl<L: PageLoader> PageLoader for Overlay<'_, L> {
    async fn load(&self, hash: Hash) -> Result<Arc<Page>, ManifestError> {
        let found = self.pages.lock().expect("overlay lock").get(&hash).cloned();
        match found {
            Some(page) => Ok(page),
            None => self.inner.load(hash).await,
        }
    }
}

/// Applies a strategy and per-key resolutions to a three-way result; returns the edits to
/// apply to ours and the conflicts left unresolved.
pub fn resolve(
    mut merged: ThreeWay,
    default: Option<Resolve>,
    per_key: &HashMap<String, Resolve>,
) -> (BTreeMap<String, Option<LeafEntry>>, Vec<Conflict>) {
    let mut left = Vec::new();
    for conflict in merged.conflicts {
        let choice = per_key
            .get(&conflict.key)
            .cloned()
            .or_else(|| default.clone());
        let (ours, theirs) = merged.sides.remove(&conflict.key).unwrap_or_default();
        let edit = match choice {
            None => {
                left.push(conflict);
                continue;
            }
            Some(Resolve::Ours) => ours,
            Some(Resolve::Theirs) => theirs,
            Some(Resolve::Delete) => None,
            Some(Resolve::Value(entry)) => Some(entry),
        };
        merged.edits.insert(conflict.key, edit);
    }
    (merged.edits, left)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    /// Pages kept in memory, so merge laws can be checked on real trees.
    #[derive(Default)]
    struct Mem(Mutex<HashMap<Hash, Bytes>>);

    impl PageLoader for Mem {
        async fn load(&self, hash: Hash) -> Result<Arc<Page>, ManifestError> {
            let bytes = self
                .0
                .lock()
                .unwrap()
                .get(&hash)
                .cloned()
                .expect("page stored");
            Ok(Arc::new(Page::decode(hash, &bytes)?))
        }
    }

    type State = BTreeMap<String, u8>;

    fn entry(key: &str, value: u8) -> LeafEntry {
        let hash = Hash::of(&[value]);
        LeafEntry {
            key: key.to_owned(),
            size: 1,
            chunks: vec![ChunkRef { hash, len: 1 }],
        }
    }

    fn tree(mem: &Mem, state: &State) -> Option<Root> {
        let (root, pages) = manifest::build(state.iter().map(|(k, v)| entry(k, *v)).collect());
        let mut map = mem.0.lock().unwrap();
        for p in pages {
            map.insert(p.hash, p.bytes);
        }
        root
    }

    fn state_of(entries: Vec<LeafEntry>) -> State {
        entries
            .into_iter()
            .map(|e| (e.key, e.chunks[0].hash.0[0]))
            .collect()
    }

    fn byte_of(value: u8) -> u8 {
        Hash::of(&[value]).0[0]
    }

    /// Merges theirs into ours over base and returns the resulting state and conflicts.
    fn merge(
        base: &State,
        ours: &State,
        theirs: &State,
        default: Option<Resolve>,
    ) -> (State, Vec<Conflict>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mem = Mem::default();
            let (b, o, t) = (tree(&mem, base), tree(&mem, ours), tree(&mem, theirs));
            let merged = combine(
                diff::diff(&mem, b.as_ref(), o.as_ref()).await.unwrap(),
                diff::diff(&mem, b.as_ref(), t.as_ref()).await.unwrap(),
            );
            let (edits, left) = resolve(merged, default, &HashMap::new());
            let (root, pages) = manifest::update(&mem, o.as_ref(), edits).await.unwrap();
            {
                let mut map = mem.0.lock().unwrap();
                for p in pages {
                    map.insert(p.hash, p.bytes);
                }
            }
            let entries = manifest::entries(&mem, root.as_ref()).await.unwrap();
            (state_of(entries), left)
        })
    }

    fn hashed(state: &State) -> State {
        state
            .iter()
            .map(|(k, v)| (k.clone(), byte_of(*v)))
            .collect()
    }

    fn arb_state() -> impl Strategy<Value = State> {
        proptest::collection::btree_map("[a-f]{1,2}", 0u8..4, 0..20)
    }

    #[test]
    fn each_conflict_kind_is_reported() {
        let base = State::from([("m".into(), 0), ("d".into(), 0), ("x".into(), 0)]);
        let ours = State::from([("m".into(), 1), ("x".into(), 1), ("a".into(), 1)]);
        let theirs = State::from([("m".into(), 2), ("d".into(), 2), ("a".into(), 2)]);
        let (_, conflicts) = merge(&base, &ours, &theirs, None);
        let kinds: Vec<(&str, ConflictKind)> =
            conflicts.iter().map(|c| (c.key.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                ("a", ConflictKind::BothAdded),
                ("d", ConflictKind::DeletedModified),
                ("m", ConflictKind::BothModified),
                ("x", ConflictKind::ModifiedDeleted),
            ]
        );
        let d = &conflicts[1];
        assert_eq!(d.ours, None);
        assert_eq!(d.theirs, Some(value_id(&entry("d", 2))));
        assert_eq!(d.base, Some(value_id(&entry("d", 0))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn merging_an_unchanged_side_yields_the_other(base in arb_state(), other in arb_state()) {
            let (merged, conflicts) = merge(&base, &base, &other, None);
            prop_assert!(conflicts.is_empty());
            prop_assert_eq!(merged, hashed(&other));
            let (merged, conflicts) = merge(&base, &other, &base, None);
            prop_assert!(conflicts.is_empty());
            prop_assert_eq!(merged, hashed(&other));
        }

        #[test]
        fn merging_a_state_with_itself_is_that_state(base in arb_state(), a in arb_state()) {
            let (merged, conflicts) = merge(&base, &a, &a, None);
            prop_assert!(conflicts.is_empty());
            prop_assert_eq!(merged, hashed(&a));
        }

        #[test]
        fn ours_and_theirs_are_mirror_images(base in arb_state(), a in arb_state(), b in arb_state()) {
            let (ab, c1) = merge(&base, &a, &b, Some(Resolve::Ours));
            let (ba, c2) = merge(&base, &b, &a, Some(Resolve::Theirs));
            prop_assert!(c1.is_empty() && c2.is_empty());
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn no_one_sided_change_is_ever_lost(base in arb_state(), a in arb_state(), b in arb_state()) {
            let (merged, conflicts) = merge(&base, &a, &b, None);
            let conflicted: std::collections::HashSet<&str> = conflicts.iter().map(|c| c.key.as_str()).collect();
            let keys: std::collections::BTreeSet<&String> = base.keys().chain(a.keys()).chain(b.keys()).collect();
            for key in keys {
                let (o, t, bs) = (a.get(key), b.get(key), base.get(key));
                let expected = if o == bs { t } else if t == bs || o == t { o } else {
                    prop_assert!(conflicted.contains(key.as_str()), "{key} must conflict");
                    continue;
                };
                prop_assert_eq!(merged.get(key).copied(), expected.map(|v| byte_of(*v)), "key {}", key);
            }
        }

        #[test]
        fn applying_a_diff_to_a_gives_b(a in arb_state(), b in arb_state()) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mem = Mem::default();
                let (ta, tb) = (tree(&mem, &a), tree(&mem, &b));
                let changes = diff::diff(&mem, ta.as_ref(), tb.as_ref()).await.unwrap();
                let edits: BTreeMap<String, Option<LeafEntry>> =
                    changes.iter().map(|c| (c.key().to_owned(), c.after().cloned())).collect();
                let (root, _) = manifest::update(&mem, ta.as_ref(), edits).await.unwrap();
                prop_assert_eq!(root, tb);
                Ok(())
            })?;
        }
    }
}
