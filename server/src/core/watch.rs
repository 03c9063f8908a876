//! The change feed and leases.
//!
//! The feed is the catalog's `events` table, written by triggers in the transaction of each
//! change, read by id. Ids are drawn from a sequence, so on Postgres a transaction may hold an
//! id and commit after a higher one is already visible: a reader that stepped past the gap
//! would never see that event. [`FeedTail`] therefore stops at a gap until every transaction
//! that was running when it first saw the gap has ended; an id still missing then belongs to a
//! transaction that rolled back, and is passed over. Each event is so delivered exactly once,
//! in id order, which within a session is commit order (commits of a session are serialized by
//! its row lock and draw their ids under it).

use std::time::Duration;

use super::engine::{Engine, EngineError};
use super::validate::{self, invalid};
use crate::catalog::{EventPage, EventRecord, LeaseRecord, RefKind};

/// Events one catalog read returns at most.
const FEED_PAGE: u32 = 500;

/// The longest lease a holder may take or renew for.
const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

/// What happened, in the feed's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    CheckpointCreated,
    BranchCreated,
    BranchMoved,
    BranchDeleted,
    TagSet,
    TagRemoved,
    SessionDeleted,
}

impl EventKind {
    /// Classifies a feed row by the kind of ref it moved and the ref-log operation.
    pub fn of(record: &EventRecord) -> Self {
        match (record.kind, record.op.as_str()) {
            (None, _) => Self::SessionDeleted,
            (Some(RefKind::Tag), "untag") => Self::TagRemoved,
            (Some(RefKind::Tag), _) => Self::TagSet,
            (Some(RefKind::Branch), "commit" | "merge" | "fork") => Self::CheckpointCreated,
            (Some(RefKind::Branch), "create") => Self::BranchCreated,
            (Some(RefKind::Branch), "delete") => Self::BranchDeleted,
            (Some(RefKind::Branch), _) => Self::BranchMoved,
        }
    }
}

/// Which events a watcher wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchScope {
    session: Option<String>,
    branch: Option<String>,
}

impl WatchScope {
    /// Every session when `session` is empty; one branch of it when `branch` is not.
    pub fn new(session: &str, branch: &str) -> Result<Self, EngineError> {
        if session.is_empty() {
            if !branch.is_empty() {
                return Err(invalid("branch", "needs a session_id"));
            }
            return Ok(Self::default());
        }
        validate::name("session_id", session)?;
        let branch = if branch.is_empty() {
            None
        } else {
            validate::name("branch", branch)?;
            Some(branch.to_owned())
        };
        Ok(Self {
            session: Some(session.to_owned()),
            branch,
        })
    }

    fn admits(&self, event: &EventRecord) -> bool {
        if self.session.as_ref().is_some_and(|s| *s != event.session) {
            return false;
        }
        match (&self.branch, event.kind) {
            (None, _) | (Some(_), None) => true,
            (Some(branch), Some(kind)) => kind == RefKind::Branch && *branch == event.name,
        }
    }
}

/// A gap in the ids, and the transactions that may still fill it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gap {
    /// The cursor the gap follows.
    after: i64,
    /// Every transaction running when the gap was seen is below this id.
    xmax: u64,
}

/// A watcher's place in the feed: every event up to `cursor` was settled (delivered if in
/// scope) and none after it.
#[derive(Clone, Debug)]
pub struct FeedTail {
    scope: WatchScope,
    cursor: i64,
    gap: Option<Gap>,
}

impl FeedTail {
    pub fn new(scope: WatchScope, cursor: i64) -> Self {
        Self {
            scope,
            cursor,
            gap: None,
        }
    }

    /// Where the tail stands, as a client resumes from it.
    pub fn cursor(&self) -> String {
        self.cursor.to_string()
    }

    /// Settles a page read after the cursor: returns the events in scope up to the first gap
    /// that may still fill, and moves the cursor past everything settled.
    pub fn settle(&mut self, page: EventPage) -> Vec<EventRecord> {
        let mut admitted = Vec::new();
        for event in page.events {
            if event.id != self.cursor + 1 {
                let waited_out = self
                    .gap
                    .is_some_and(|gap| gap.after == self.cursor && page.xmin >= gap.xmax);
                if !waited_out {
                    if self.gap.is_none_or(|gap| gap.after != self.cursor) {
                        self.gap = Some(Gap {
                            after: self.cursor,
                            xmax: page.xmax,
                        });
                    }
                    break;
                }
                // Every writer that could have held the missing ids has ended without them.
            }
            self.cursor = event.id;
            self.gap = None;
            if self.scope.admits(&event) {
                admitted.push(event);
            }
        }
        admitted
    }
}

/// A watcher's cursor off the wire: empty means "from now".
fn parse_cursor(cursor: &str) -> Result<Option<i64>, EngineError> {
    if cursor.is_empty() {
        return Ok(None);
    }
    match cursor.parse::<i64>() {
        Ok(id) if id >= 0 => Ok(Some(id)),
        _ => Err(invalid(
            "cursor",
            format!("{cursor:?} is not a cursor this service handed out"),
        )),
    }
}

fn ttl(field: &str, ttl_ms: u64) -> Result<Duration, EngineError> {
    let ttl = Duration::from_millis(ttl_ms);
    if ttl.is_zero() || ttl > MAX_LEASE_TTL {
        return Err(invalid(
            field,
            format!(
                "is {ttl_ms} ms; a lease lives 1 ms to {} s",
                MAX_LEASE_TTL.as_secs()
            ),
        ));
    }
    Ok(ttl)
}

impl Engine {
    /// A tail of the feed in `scope`, after `cursor` or, without one, after the newest event.
    pub async fn watch(&self, scope: WatchScope, cursor: &str) -> Result<FeedTail, EngineError> {
        let start = match parse_cursor(cursor)? {
            Some(id) => {
                let horizon = self.catalog.feed_horizon().await?;
                if id < horizon {
                    return Err(EngineError::FailedPrecondition(format!(
                        "cursor {id} is older than the feed keeps (events up to {horizon} were \
                         dropped after {}); watch from now and reload what you follow",
                        humantime::format_duration(self.config.feed_retention)
                    )));
                }
                let newest = self.catalog.last_event().await?;
                if id > newest {
                    return Err(invalid(
                        "cursor",
                        format!(
                            "{id} is ahead of this feed, whose newest event is {newest}; \
                             was it handed out by another deployment?"
                        ),
                    ));
                }
                id
            }
            None => self.catalog.last_event().await?,
        };
        Ok(FeedTail::new(scope, start))
    }

    /// The next events of a tail; `more` is true when the page was full and reading again at
    /// once will find more.
    pub async fn feed_next(
        &self,
        tail: &mut FeedTail,
    ) -> Result<(Vec<EventRecord>, bool), EngineError> {
        let page = self.catalog.events_after(tail.cursor, FEED_PAGE).await?;
        let full = page.events.len() == FEED_PAGE as usize;
        let before = tail.cursor;
        let events = tail.settle(page);
        Ok((events, full && tail.cursor != before))
    }

    pub async fn acquire_lease(
        &self,
        session: &str,
        branch: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<LeaseRecord, EngineError> {
        validate::name("session_id", session)?;
        let branch = validate::branch("branch", branch)?;
        validate::holder("holder", holder)?;
        let ttl = ttl("ttl_ms", ttl_ms)?;
        Ok(self
            .catalog
            .acquire_lease(session, &branch, holder, ttl)
            .await?)
    }

    pub async fn renew_lease(
        &self,
        session: &str,
        branch: &str,
        token: u64,
        ttl_ms: u64,
    ) -> Result<LeaseRecord, EngineError> {
        validate::name("session_id", session)?;
        let branch = validate::branch("branch", branch)?;
        let ttl = ttl("ttl_ms", ttl_ms)?;
        Ok(self
            .catalog
            .renew_lease(session, &branch, token, ttl)
            .await?)
    }

    pub async fn release_lease(
        &self,
        session: &str,
        branch: &str,
        token: u64,
    ) -> Result<(), EngineError> {
        validate::name("session_id", session)?;
        let branch = validate::branch("branch", branch)?;
        Ok(self.catalog.release_lease(session, &branch, token).await?)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn event(id: i64, session: &str) -> EventRecord {
        EventRecord {
            id,
            session: session.to_owned(),
            kind: Some(RefKind::Branch),
            name: "main".to_owned(),
            old: None,
            new: None,
            op: "commit".to_owned(),
            at: Utc::now(),
        }
    }

    fn page(ids: &[i64], xmin: u64, xmax: u64) -> EventPage {
        EventPage {
            events: ids.iter().map(|&id| event(id, "s")).collect(),
            xmin,
            xmax,
        }
    }

    fn ids(events: &[EventRecord]) -> Vec<i64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_gap_holds_the_tail_until_its_writers_have_ended() {
        let mut tail = FeedTail::new(WatchScope::default(), 0);
        // Id 3 is taken by a running transaction: 4 and 5 wait behind it.
        assert_eq!(ids(&tail.settle(page(&[1, 2, 4, 5], 100, 105))), vec![1, 2]);
        assert_eq!(tail.cursor(), "2");
        // Still running (xmin has not passed the xmax seen with the gap).
        assert!(tail.settle(page(&[4, 5], 103, 106)).is_empty());
        // Its writer committed: 3 is there and everything follows in order.
        assert_eq!(ids(&tail.settle(page(&[3, 4, 5], 103, 106))), vec![3, 4, 5]);
    }

    #[test]
    fn a_gap_left_by_a_rollback_is_passed_once_its_writers_ended() {
        let mut tail = FeedTail::new(WatchScope::default(), 0);
        assert_eq!(ids(&tail.settle(page(&[1, 3], 100, 105))), vec![1]);
        // Every transaction running at the first sighting has ended, and 2 never came.
        assert_eq!(ids(&tail.settle(page(&[3, 4], 105, 107))), vec![3, 4]);
        assert_eq!(tail.cursor(), "4");
    }

    #[test]
    fn a_new_gap_waits_on_the_transactions_of_its_own_sighting() {
        let mut tail = FeedTail::new(WatchScope::default(), 0);
        assert_eq!(ids(&tail.settle(page(&[1, 3], 100, 105))), vec![1]);
        assert_eq!(ids(&tail.settle(page(&[2, 3, 5], 101, 110))), vec![2, 3]);
        // The gap at 4 was first seen with xmax 110: xmin 105 is not enough.
        assert!(tail.settle(page(&[5], 105, 111)).is_empty());
        assert_eq!(ids(&tail.settle(page(&[5], 110, 111))), vec![5]);
    }

    #[test]
    fn events_out_of_scope_move_the_cursor_without_being_delivered() {
        let scope = WatchScope::new("a", "").unwrap();
        let mut tail = FeedTail::new(scope, 0);
        let mut p = page(&[1, 2, 3], 0, 0);
        for event in &mut p.events {
            event.session = "a".to_owned();
        }
        p.events[1].session = "b".to_owned();
        assert_eq!(ids(&tail.settle(p)), vec![1, 3]);
        assert_eq!(tail.cursor(), "3");
    }

    #[test]
    fn a_branch_scope_admits_its_branch_and_the_sessions_deletion() {
        let scope = WatchScope::new("a", "main").unwrap();
        let mut other = event(1, "a");
        other.name = "dev".to_owned();
        let mut tag = event(2, "a");
        tag.kind = Some(RefKind::Tag);
        tag.name = "main".to_owned();
        let mut deleted = event(3, "a");
        deleted.kind = None;
        assert!(scope.admits(&event(0, "a")));
        assert!(!scope.admits(&other));
        assert!(!scope.admits(&tag));
        assert!(scope.admits(&deleted));
        assert_eq!(EventKind::of(&deleted), EventKind::SessionDeleted);
    }

    #[test]
    fn bad_cursors_and_scopes_name_their_field() {
        let err = parse_cursor("abc").unwrap_err().to_string();
        assert!(err.contains("cursor"), "{err}");
        assert_eq!(parse_cursor("").unwrap(), None);
        assert_eq!(parse_cursor("17").unwrap(), Some(17));
        let err = WatchScope::new("", "main").unwrap_err().to_string();
        assert!(err.contains("branch"), "{err}");
    }
}
