//! Manifests: which chunks make up each value of a checkpoint's state.
//!
//! A manifest is a content-addressed search tree of pages (a "prolly tree"). Leaf pages hold
//! sorted entries (key, size, chunk list); inner pages hold references to the pages below,
//! keyed by their first key. A page ends after an item whose key hashes to a boundary, so the
//! tree's shape depends only on the set of keys, never on the order of edits. Two checkpoints
//! that share most keys therefore share most pages, an incremental checkpoint writes only the
//! pages along the paths of its changed keys, and two trees compare by skipping equal hashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::hash::Hash;

/// Average number of items per page. 64 keeps a page of typical entries (~100 bytes each)
/// around 6 KiB, small enough to live inline in the catalog, and a tree of 100,000 keys three
/// levels deep, so one changed key rewrites about 15 KiB of pages.
pub const FANOUT: u64 = 64;

/// One chunk of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u64,
}

/// A key of the state and the chunks of its value, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafEntry {
    pub key: String,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

/// A reference from an inner page to the page below, with totals over that subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRef {
    pub first_key: String,
    pub page: Hash,
    pub entries: u64,
    pub bytes: u64,
}

/// A decoded page. Level 0 pages hold `entries`, higher levels hold `children`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Page {
    pub level: u32,
    pub entries: Vec<LeafEntry>,
    pub children: Vec<ChildRef>,
}

/// A page created by a build or an update, ready to be stored.
#[derive(Clone, Debug)]
pub struct NewPage {
    pub hash: Hash,
    pub bytes: Bytes,
}

/// The root of a tree, with the totals a checkpoint summary needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub page: Hash,
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest page {0} is malformed: {1}")]
    Malformed(Hash, String),
    /// The page is missing or its bytes are damaged.
    #[error("manifest page {0} is unreadable: {1}")]
    Lost(Hash, String),
    /// A transient failure of the storage underneath.
    #[error("manifest page could not be read now: {0}")]
    Unavailable(String),
}

/// Where pages of existing trees come from.
pub trait PageLoader: Sync {
    fn load(&self, hash: Hash) -> impl Future<Output = Result<Arc<Page>, ManifestError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
struct PageMsg {
    #[prost(uint32, tag = "1")]
    level: u32,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<EntryMsg>,
    #[prost(message, repeated, tag = "3")]
    children: Vec<ChildMsg>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryMsg {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(uint64, tag = "2")]
    size: u64,
    /// The chunk hashes, 32 bytes each, concatenated.
    #[prost(bytes = "vec", tag = "3")]
    hashes: Vec<u8>,
    #[prost(uint64, repeated, tag = "4")]
    lens: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ChildMsg {
    #[prost(string, tag = "1")]
    first_key: String,
    #[prost(bytes = "vec", tag = "2")]
    page: Vec<u8>,
    #[prost(uint64, tag = "3")]
    entries: u64,
    #[prost(uint64, tag = "4")]
    bytes: u64,
}

impl Page {
    /// Encodes the page; the same page always encodes to the same bytes.
    pub fn encode(&self) -> Bytes {
        let msg = PageMsg {
            level: self.level,
            entries: self.entries.iter().map(encode_entry).collect(),
            children: self
                .children
                .iter()
                .map(|c| ChildMsg {
                    first_key: c.first_key.clone(),
                    page: c.page.0.to_vec(),
                    entries: c.entries,
                    bytes: c.bytes,
                })
                .collect(),
        };
        Bytes::from(msg.encode_to_vec())
    }

    pub fn decode(hash: Hash, bytes: &[u8]) -> Result<Self, ManifestError> {
        let malformed = |why: &str| ManifestError::Malformed(hash, why.to_owned());
        let msg = PageMsg::decode(bytes).map_err(|e| malformed(&e.to_string()))?;
        let entries = msg
            .entries
            .into_iter()
            .map(|e| decode_entry(e).ok_or_else(|| malformed("bad chunk list")))
            .collect::<Result<Vec<_>, _>>()?;
        let children = msg
            .children
            .into_iter()
            .map(|c| {
                Ok(ChildRef {
                    first_key: c.first_key,
                    page: Hash::from_slice(&c.page).ok_or_else(|| malformed("bad child hash"))?,
                    entries: c.entries,
                    bytes: c.bytes,
                })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let page = Page {
            level: msg.level,
            entries,
            children,
        };
        let consistent = if page.level == 0 {
            page.children.is_empty()
        } else {
            page.entries.is_empty()
        };
        if !consistent || page.is_empty() {
            return Err(malformed("items do not match the page level"));
        }
        Ok(page)
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.children.is_empty()
    }

    fn first_key(&self) -> &str {
        match self.entries.first() {
            Some(e) => &e.key,
            None => &self.children[0].first_key,
        }
    }
}

fn encode_entry(e: &LeafEntry) -> EntryMsg {
    EntryMsg {
        key: e.key.clone(),
        size: e.size,
        hashes: e.chunks.iter().flat_map(|c| c.hash.0).collect(),
        lens: e.chunks.iter().map(|c| c.len).collect(),
    }
}

fn decode_entry(e: EntryMsg) -> Option<LeafEntry> {
    if e.hashes.len() != e.lens.len() * 32 {
        return None;
    }
    let chunks: Vec<ChunkRef> = e
        .hashes
        .chunks_exact(32)
        .zip(e.lens)
        .map(|(h, len)| ChunkRef {
            hash: Hash::from_slice(h).expect("32 bytes"),
            len,
        })
        .collect();
    if chunks.iter().map(|c| c.len).sum::<u64>() != e.size {
        return None;
    }
    Some(LeafEntry {
        key: e.key,
        size: e.size,
        chunks,
    })
}

// ---------------------------------------------------------------------------------------------
// Items: what a level holds
// ---------------------------------------------------------------------------------------------

/// The two kinds of page items, so one algorithm serves every level.
trait Item: Clone + Send + Sync {
    fn key(&self) -> &str;
    fn items(page: &Page) -> &[Self];
    fn into_page(level: u32, items: Vec<Self>) -> Page;
    fn totals(&self) -> (u64, u64);
}

impl Item for LeafEntry {
    fn key(&self) -> &str {
        &self.key
    }
    fn items(page: &Page) -> &[Self] {
        &page.entries
    }
    fn into_page(level: u32, items: Vec<Self>) -> Page {
        Page {
            level,
            entries: items,
            children: Vec::new(),
        }
    }
    fn totals(&self) -> (u64, u64) {
        (1, self.size)
    }
}

impl Item for ChildRef {
    fn key(&self) -> &str {
        &self.first_key
    }
    fn items(page: &Page) -> &[Self] {
        &page.children
    }
    fn into_page(level: u32, items: Vec<Self>) -> Page {
        Page {
            level,
            entries: Vec::new(),
            children: items,
        }
    }
    fn totals(&self) -> (u64, u64) {
        (self.entries, self.bytes)
    }
}

/// Whether a page at `level` ends after the item with this key.
fn is_boundary(level: u32, key: &str) -> bool {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&level.to_le_bytes());
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let prefix = u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"));
    prefix % FANOUT == 0
}

/// Collects the pages a build or update creates.
#[derive(Default)]
struct Writer {
    pages: HashMap<Hash, (Arc<Page>, Bytes)>,
}

impl Writer {
    fn write(&mut self, page: Page) -> ChildRef {
        let bytes = page.encode();
        let hash = Hash::of(&bytes);
        let sum = |(n, b): (u64, u64), (dn, db): (u64, u64)| (n + dn, b + db);
        let (entries, total) = match page.level {
            0 => page.entries.iter().map(Item::totals).fold((0, 0), sum),
            _ => page.children.iter().map(Item::totals).fold((0, 0), sum),
        };
        let first_key = page.first_key().to_owned();
        self.pages.insert(hash, (Arc::new(page), bytes));
        ChildRef {
            first_key,
            page: hash,
            entries,
            bytes: total,
        }
    }

    /// Splits a level's items into pages at boundaries and returns references to them.
    fn split<T: Item>(&mut self, level: u32, items: Vec<T>) -> Vec<ChildRef> {
        let mut refs = Vec::new();
        let mut current = Vec::new();
        for item in items {
            let boundary = is_boundary(level, item.key());
            current.push(item);
            if boundary {
                refs.push(self.write(T::into_page(level, std::mem::take(&mut current))));
            }
        }
        if !current.is_empty() {
            refs.push(self.write(T::into_page(level, current)));
        }
        refs
    }

    /// Stacks inner levels on `refs` (pages at `level`) until one page remains.
    fn build_up(&mut self, mut level: u32, mut refs: Vec<ChildRef>) -> Option<ChildRef> {
        while refs.len() > 1 {
            level += 1;
            refs = self.split(level, refs);
        }
        refs.pop()
    }

    /// The new pages reachable from `root`: pages that an update replaced on its way up are
    /// dropped.
    fn finish(mut self, root: Option<&ChildRef>) -> Vec<NewPage> {
        let mut out = Vec::new();
        let mut stack: Vec<Hash> = root.map(|r| r.page).into_iter().collect();
        let mut seen = HashSet::new();
        while let Some(hash) = stack.pop() {
            if !seen.insert(hash) {
                continue;
            }
            if let Some((page, bytes)) = self.pages.remove(&hash) {
                stack.extend(page.children.iter().map(|c| c.page));
                out.push(NewPage { hash, bytes });
            }
        }
        out
    }
}

fn to_root(r: ChildRef) -> Root {
    Root {
        page: r.page,
        entries: r.entries,
        bytes: r.bytes,
    }
}

/// Builds the tree of a whole state from entries sorted by key.
pub fn build(entries: Vec<LeafEntry>) -> (Option<Root>, Vec<NewPage>) {
    debug_assert!(entries.windows(2).all(|w| w[0].key < w[1].key));
    let mut writer = Writer::default();
    let refs = writer.split(0, entries);
    let root = writer.build_up(0, refs);
    let pages = writer.finish(root.as_ref());
    (root.map(to_root), pages)
}

// ---------------------------------------------------------------------------------------------
// Cursor: walking the pages of one level of an existing tree
// ---------------------------------------------------------------------------------------------

/// Positions on the pages of one level of a tree, in key order.
pub struct Cursor<'a, L> {
    loader: &'a L,
    root: Arc<Page>,
    level: u32,
    /// Inner pages from the root down to `level + 1`, with the index of the child taken.
    path: Vec<(Arc<Page>, usize)>,
    current: Arc<Page>,
}

impl<L> std::fmt::Debug for Cursor<'_, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("level", &self.level)
            .field("depth", &self.path.len())
            .finish()
    }
}

impl<'a, L: PageLoader> Cursor<'a, L> {
    pub async fn new(loader: &'a L, root: Hash, level: u32) -> Result<Self, ManifestError> {
        let root = loader.load(root).await?;
        Ok(Self {
            loader,
            current: Arc::clone(&root),
            root,
            level,
            path: Vec::new(),
        })
    }

    /// Moves to the page at this cursor's level whose range holds `key` (the first page when
    /// `key` sorts before every key) and returns it.
    pub async fn seek(&mut self, key: &str) -> Result<Arc<Page>, ManifestError> {
        self.path.clear();
        let mut page = Arc::clone(&self.root);
        while page.level > self.level {
            let idx = page
                .children
                .partition_point(|c| c.first_key.as_str() <= key)
                .saturating_sub(1);
            let child = page.children[idx].page;
            self.path.push((page, idx));
            page = self.loader.load(child).await?;
        }
        self.current = Arc::clone(&page);
        Ok(page)
    }

    /// The first key of the page after the current one, if there is one.
    pub fn upper_bound(&self) -> Option<&str> {
        self.path
            .iter()
            .rev()
            .find_map(|(page, idx)| page.children.get(idx + 1).map(|c| c.first_key.as_str()))
    }

    /// Moves to the next page of the level, or returns `None` at the end.
    pub async fn next_page(&mut self) -> Result<Option<Arc<Page>>, ManifestError> {
        let Some(depth) = self
            .path
            .iter()
            .rposition(|(page, idx)| idx + 1 < page.children.len())
        else {
            return Ok(None);
        };
        self.path.truncate(depth + 1);
        let (page, idx) = self.path.last_mut().expect("depth is in range");
        *idx += 1;
        let mut next = self.loader.load(page.children[*idx].page).await?;
        while next.level > self.level {
            let child = next.children[0].page;
            self.path.push((next, 0));
            next = self.loader.load(child).await?;
        }
        self.current = Arc::clone(&next);
        Ok(Some(next))
    }

    pub fn current(&self) -> &Arc<Page> {
        &self.current
    }
}

// ---------------------------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------------------------

/// Applies `edits` (key → new entry, or `None` to delete) to the tree at `root`.
///
/// Only pages whose key ranges hold an edit are read and rewritten, level by level: the cost
/// follows the number of edits times the tree's depth, not the size of the state. The result
/// is the same tree a [`build`] of the edited state gives.
pub async fn update<L: PageLoader>(
    loader: &L,
    root: Option<&Root>,
    edits: BTreeMap<String, Option<LeafEntry>>,
) -> Result<(Option<Root>, Vec<NewPage>), ManifestError> {
    let Some(root) = root else {
        return Ok(build(edits.into_values().flatten().collect()));
    };
    if edits.is_empty() {
        return Ok((Some(root.clone()), Vec::new()));
    }

    let height = loader.load(root.page).await?.level;
    let mut writer = Writer::default();
    let mut refs = update_level(loader, root.page, 0, edits, &mut writer).await?;
    for level in 1..=height {
        if refs.is_empty() {
            // Nothing changed at the level below, so nothing above changes either.
            return Ok((Some(root.clone()), Vec::new()));
        }
        refs = update_level(loader, root.page, level, refs, &mut writer).await?;
    }

    // The root level has been rewritten: `refs` now holds its new pages (as edits keyed by
    // first key); stack levels on top if it split, drop levels if it shrank to one child.
    let top: Vec<ChildRef> = refs.into_values().flatten().collect();
    let mut new_root = writer.build_up(height, top);
    while let Some(r) = &new_root {
        let page = match writer.pages.get(&r.page) {
            Some((page, _)) => Arc::clone(page),
            None => loader.load(r.page).await?,
        };
        if page.level == 0 || page.children.len() > 1 {
            break;
        }
        new_root = Some(page.children[0].clone());
    }
    let pages = writer.finish(new_root.as_ref());
    Ok((new_root.map(to_root), pages))
}

/// Rewrites the pages of one level that `edits` touch and returns the edits this makes to the
/// level above: removed page references, then the new ones.
async fn update_level<L: PageLoader, T: Item>(
    loader: &L,
    root: Hash,
    level: u32,
    edits: BTreeMap<String, Option<T>>,
    writer: &mut Writer,
) -> Result<BTreeMap<String, Option<ChildRef>>, ManifestError> {
    let mut cursor = Cursor::new(loader, root, level).await?;
    let edits: Vec<(String, Option<T>)> = edits.into_iter().collect();
    let mut above = BTreeMap::new();
    let mut next = 0;
    while next < edits.len() {
        // Take the page holding the next edit, and apply every edit that falls in its range.
        let page = cursor.seek(&edits[next].0).await?;
        above.insert(page.first_key().to_owned(), None);
        let mut items = T::items(&page).to_vec();
        next = apply_in_range(&mut items, &edits, next, cursor.upper_bound());

        // A page must end on a boundary key: when the edits removed it, or added keys past it,
        // the run continues into the next page.
        while let Some(last) = items.last() {
            if is_boundary(level, last.key()) {
                break;
            }
            let Some(following) = cursor.next_page().await? else {
                break;
            };
            above.insert(following.first_key().to_owned(), None);
            items.extend_from_slice(T::items(&following));
            next = apply_in_range(&mut items, &edits, next, cursor.upper_bound());
        }

        for new_ref in writer.split(level, items) {
            above.insert(new_ref.first_key.clone(), Some(new_ref));
        }
    }
    Ok(above)
}

/// Applies edits from index `next` whose keys sort below `upper` to `items` (sorted by key),
/// and returns the index of the first edit left.
fn apply_in_range<T: Item>(
    items: &mut Vec<T>,
    edits: &[(String, Option<T>)],
    mut next: usize,
    upper: Option<&str>,
) -> usize {
    while let Some((key, edit)) = edits.get(next) {
        if upper.is_some_and(|upper| key.as_str() >= upper) {
            break;
        }
        let pos = items.binary_search_by(|item| item.key().cmp(key));
        match (pos, edit) {
            (Ok(i), Some(item)) => items[i] = item.clone(),
            (Ok(i), None) => {
                items.remove(i);
            }
            (Err(i), Some(item)) => items.insert(i, item.clone()),
            (Err(_), None) => {}
        }
        next += 1;
    }
    next
}

/// Reads every entry of a tree in key order. Meant for tests and small trees; reads of large
/// states walk a [`Cursor`] instead.
pub async fn entries<L: PageLoader>(
    loader: &L,
    root: Option<&Root>,
) -> Result<Vec<LeafEntry>, ManifestError> {
    let Some(root) = root else {
        return Ok(Vec::new());
    };
    let mut cursor = Cursor::new(loader, root.page, 0).await?;
    let mut page = Some(cursor.seek("").await?);
    let mut out = Vec::new();
    while let Some(p) = page {
        out.extend_from_slice(&p.entries);
        page = cursor.next_page().await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use proptest::prelude::*;

    use super::*;

    #[derive(Default)]
    struct MemLoader {
        pages: Mutex<HashMap<Hash, Bytes>>,
        loads: Mutex<usize>,
    }

    impl MemLoader {
        fn store(&self, pages: &[NewPage]) {
            let mut map = self.pages.lock().unwrap();
            for p in pages {
                map.insert(p.hash, p.bytes.clone());
            }
        }
    }

    impl PageLoader for MemLoader {
        async fn load(&self, hash: Hash) -> Result<Arc<Page>, ManifestError> {
            *self.loads.lock().unwrap() += 1;
            let bytes = self.pages.lock().unwrap().get(&hash).cloned();
            let bytes = bytes.ok_or_else(|| ManifestError::Lost(hash, "absent".into()))?;
            assert_eq!(Hash::of(&bytes), hash);
            Ok(Arc::new(Page::decode(hash, &bytes)?))
        }
    }

    fn entry(key: &str, version: u64) -> LeafEntry {
        let hash = Hash::of(format!("{key}:{version}").as_bytes());
        LeafEntry {
            key: key.to_owned(),
            size: version + 1,
            chunks: vec![ChunkRef {
                hash,
                len: version + 1,
            }],
        }
    }

    fn state(n: usize) -> BTreeMap<String, LeafEntry> {
        (0..n)
            .map(|i| format!("k/{i:06}"))
            .map(|k| (k.clone(), entry(&k, 0)))
            .collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn page_encoding_round_trips_and_rejects_garbage() {
        let page = Page {
            level: 0,
            entries: vec![entry("a", 1), entry("b", 2)],
            children: vec![],
        };
        let bytes = page.encode();
        assert_eq!(Page::decode(Hash::of(&bytes), &bytes).unwrap(), page);
        assert!(Page::decode(Hash::of(b"x"), b"\xff\xff\xff").is_err());
        assert!(
            Page::decode(Hash::of(b""), b"").is_err(),
            "an empty page is malformed"
        );
    }

    #[test]
    fn build_splits_large_states_into_levels() {
        let entries: Vec<_> = state(20_000).into_values().collect();
        let (root, pages) = build(entries.clone());
        let root = root.unwrap();
        assert_eq!(root.entries, 20_000);
        assert_eq!(root.bytes, 20_000);
        assert!(
            pages.len() > 20_000 / (FANOUT as usize * 4),
            "{} pages",
            pages.len()
        );
        let loader = MemLoader::default();
        loader.store(&pages);
        assert_eq!(rt().block_on(entries_of(&loader, &root)), entries);
    }

    async fn entries_of(loader: &MemLoader, root: &Root) -> Vec<LeafEntry> {
        entries(loader, Some(root)).await.unwrap()
    }

    #[test]
    fn one_changed_key_rewrites_one_page_per_level() {
        let rt = rt();
        let base = state(100_000);
        let (root, pages) = build(base.values().cloned().collect());
        let root = root.unwrap();
        let loader = MemLoader::default();
        loader.store(&pages);
        let height = rt.block_on(loader.load(root.page)).unwrap().level;

        let edits = BTreeMap::from([("k/050000".to_owned(), Some(entry("k/050000", 9)))]);
        *loader.loads.lock().unwrap() = 0;
        let (new_root, new_pages) = rt.block_on(update(&loader, Some(&root), edits)).unwrap();
        let loads = *loader.loads.lock().unwrap();
        assert!(
            new_pages.len() <= height as usize + 2,
            "{} pages for one edit",
            new_pages.len()
        );
        assert!(
            loads <= 4 * (height as usize + 2),
            "{loads} loads for one edit"
        );
        let new_root = new_root.unwrap();
        assert_eq!(new_root.bytes, 100_000 + 9);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn update_gives_the_tree_a_full_build_gives(
            size in 0usize..3000,
            ops in proptest::collection::vec((0usize..4000, 0u8..3), 0..300),
        ) {
            let rt = rt();
            let base = state(size);
            let (root, pages) = build(base.values().cloned().collect());
            let loader = MemLoader::default();
            loader.store(&pages);

            let mut expected = base;
            let mut edits = BTreeMap::new();
            for (i, op) in ops {
                let key = format!("k/{i:06}");
                if op == 0 {
                    expected.remove(&key);
                    edits.insert(key, None);
                } else {
                    let e = entry(&key, u64::from(op));
                    expected.insert(key.clone(), e.clone());
                    edits.insert(key, Some(e));
                }
            }
            let (new_root, new_pages) = rt.block_on(update(&loader, root.as_ref(), edits)).unwrap();
            let (want_root, _) = build(expected.values().cloned().collect());
            prop_assert_eq!(&new_root, &want_root);

            loader.store(&new_pages);
            let got = rt.block_on(entries(&loader, new_root.as_ref())).unwrap();
            prop_assert_eq!(got, expected.into_values().collect::<Vec<_>>());
        }
    }
}
