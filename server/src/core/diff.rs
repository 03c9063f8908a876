//! Differences between two manifests. Subtrees with equal hashes are skipped without being
//! read, so the cost follows the amount of change, not the size of the states.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::hash::Hash;
use super::manifest::{LeafEntry, ManifestError, Page, PageLoader, Root};

/// How one key differs between two states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added(LeafEntry),
    Removed(LeafEntry),
    Modified { old: LeafEntry, new: LeafEntry },
}

impl Change {
    pub fn key(&self) -> &str {
        match self {
            Change::Added(e) | Change::Removed(e) => &e.key,
            Change::Modified { new, .. } => &new.key,
        }
    }

    /// The entry after the change; `None` when the key was removed.
    pub fn after(&self) -> Option<&LeafEntry> {
        match self {
            Change::Added(e) => Some(e),
            Change::Removed(_) => None,
            Change::Modified { new, .. } => Some(new),
        }
    }
}

/// A value's identity: the BLAKE3 hash of its chunk hashes in order. Equal values have equal
/// identities (chunking is deterministic), so clients can compare and guard on it.
pub fn value_id(entry: &LeafEntry) -> Hash {
    let mut hasher = blake3::Hasher::new();
    for chunk in &entry.chunks {
        hasher.update(&chunk.hash.0);
    }
    Hash(*hasher.finalize().as_bytes())
}

/// Every key that differs from `a` to `b`, in key order.
pub async fn diff<L: PageLoader>(
    loader: &L,
    a: Option<&Root>,
    b: Option<&Root>,
) -> Result<Vec<Change>, ManifestError> {
    let mut left = Frontier::new(loader, a).await?;
    let mut right = Frontier::new(loader, b).await?;
    loop {
        left.drop_shared(&mut right);
        let (la, lb) = (left.top_level(), right.top_level());
        if la == 0 && lb == 0 {
            break;
        }
        if la >= lb {
            left.expand(loader, la).await?;
        } else {
            right.expand(loader, lb).await?;
        }
    }
    Ok(join(left.entries(), right.entries()))
}

/// The pages of one tree that may differ from the other tree.
struct Frontier {
    pages: Vec<(Hash, Arc<Page>)>,
}

impl Frontier {
    async fn new<L: PageLoader>(loader: &L, root: Option<&Root>) -> Result<Self, ManifestError> {
        let mut pages = Vec::new();
        if let Some(root) = root {
            pages.push((root.page, loader.load(root.page).await?));
        }
        Ok(Self { pages })
    }

    fn top_level(&self) -> u32 {
        self.pages.iter().map(|(_, p)| p.level).max().unwrap_or(0)
    }

    /// Forgets pages both trees hold: every key in such a page is equal on both sides.
    fn drop_shared(&mut self, other: &mut Frontier) {
        let mine: HashSet<Hash> = self.pages.iter().map(|(h, _)| *h).collect();
        let shared: HashSet<Hash> = other
            .pages
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| mine.contains(h))
            .collect();
        self.pages.retain(|(h, _)| !shared.contains(h));
        other.pages.retain(|(h, _)| !shared.contains(h));
    }

    /// Replaces the pages at `level` by their children.
    async fn expand<L: PageLoader>(&mut self, loader: &L, level: u32) -> Result<(), ManifestError> {
        let mut next = Vec::with_capacity(self.pages.len());
        for (hash, page) in std::mem::take(&mut self.pages) {
            if page.level != level {
                next.push((hash, page));
                continue;
            }
            for child in &page.children {
                next.push((child.page, loader.load(child.page).await?));
            }
        }
        self.pages = next;
        Ok(())
    }

    fn entries(self) -> BTreeMap<String, LeafEntry> {
        self.pages
            .iter()
            .flat_map(|(_, p)| p.entries.iter().map(|e| (e.key.clone(), e.clone())))
            .collect()
    }
}

/// Merge-joins the leaf entries left on each side.
fn join(mut a: BTreeMap<String, LeafEntry>, b: BTreeMap<String, LeafEntry>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, new) in b {
        match a.remove(&key) {
            None => changes.push(Change::Added(new)),
            Some(old) if old != new => changes.push(Change::Modified { old, new }),
            Some(_) => {}
        }
    }
    changes.extend(a.into_values().map(Change::Removed));
    changes.sort_by(|x, y| x.key().cmp(y.key()));
    changes
}
