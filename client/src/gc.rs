//! Retention policies, collection passes and store verification: the client side of
//! `SetRetentionPolicy`, `GetRetentionPolicy`, `Collect` and `Verify`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use ckpt_proto::v1 as pb;

use crate::model::{convert_all, missing, timestamp};
use crate::refs::non_empty;
use crate::{Client, Error};

/// A retention policy as the server applies it to a session or one of its branches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The session the policy applies to.
    pub session_id: String,
    /// The branch it applies to; `None` for the whole session.
    pub branch: Option<String>,
    /// The policy in compact form, e.g. `last=10,daily=7`; `none` keeps everything.
    pub policy: String,
    /// Where the policy comes from: `"branch"`, `"session"` or `"default"` (the deployment's).
    pub source: String,
}

/// What a collection pass does; the default runs a real pass over every session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectOptions {
    /// Decide and count, but delete nothing.
    pub dry_run: bool,
    /// Apply retention to this session only. Freeing unreferenced blobs is always store-wide.
    pub session_id: Option<String>,
    /// Drop no checkpoint; only free what is already unreferenced.
    pub skip_retention: bool,
    /// Return every retention decision with its reasons.
    pub explain: bool,
}

/// Counts and timings of one collection pass. In a dry run the counts say what would have
/// been deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Whether the pass deleted nothing.
    pub dry_run: bool,
    /// The pass's number; each pass in a deployment gets a larger one.
    pub epoch: u64,
    /// Sessions retention looked at.
    pub sessions_examined: u64,
    /// Checkpoints retention looked at.
    pub checkpoints_examined: u64,
    /// Checkpoints retention dropped.
    pub checkpoints_deleted: u64,
    /// Groups (`session/branch`) left alone because their policy would drop every checkpoint.
    pub groups_refused: Vec<String>,
    /// Blobs still referenced by some checkpoint after the pass.
    pub blobs_live: u64,
    /// Value chunks freed.
    pub chunks_deleted: u64,
    /// Manifest pages freed.
    pub pages_deleted: u64,
    /// Stored bytes of the freed blobs.
    pub bytes_freed: u64,
    /// Objects removed from the object store.
    pub objects_deleted: u64,
    /// Abandoned uploads removed: objects no catalog row knows, older than the upload lease.
    pub orphans_deleted: u64,
    /// Stored bytes of those abandoned uploads.
    pub orphan_bytes_freed: u64,
    /// Time spent deciding what retention keeps.
    pub retain: Duration,
    /// Time spent marking the live blobs.
    pub mark: Duration,
    /// Time spent deleting the catalog rows of dead blobs.
    pub sweep: Duration,
    /// Time spent removing their objects from the store.
    pub reclaim: Duration,
}

/// Whether retention keeps one checkpoint, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionDecision {
    /// The checkpoint's session.
    pub session_id: String,
    /// The branch whose policy decided.
    pub branch: String,
    /// The checkpoint.
    pub checkpoint_id: String,
    /// When the checkpoint was committed.
    pub created_at: DateTime<Utc>,
    /// True when the checkpoint stays.
    pub keep: bool,
    /// Why it is kept (`head of branch main`, `newest of day 2026-12-03`...); empty when
    /// dropped.
    pub reasons: Vec<String>,
    /// The policy that decided, in compact form.
    pub policy: String,
}

/// The result of [`Client::collect`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collection {
    /// Counts and timings.
    pub report: CollectReport,
    /// Every retention decision, when [`CollectOptions::explain`] was set; empty otherwise.
    pub decisions: Vec<RetentionDecision>,
}

/// A blob a checkpoint needs that is absent or does not hash right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyProblem {
    /// The checkpoint that needs the blob.
    pub checkpoint_id: String,
    /// The blob's identity.
    pub blob: String,
    /// `"missing"` or `"damaged"`.
    pub kind: String,
    /// The server's explanation.
    pub detail: String,
}

/// What a verification found: one slice ([`Client::verify`]) or all of them
/// ([`Client::verify_all`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Checkpoints whose blobs were checked.
    pub checkpoints_checked: u64,
    /// Blobs read and hashed.
    pub blobs_checked: u64,
    /// Stored bytes read.
    pub bytes_checked: u64,
    /// Objects listed in the store while looking for orphans.
    pub objects_listed: u64,
    /// Blobs missing or damaged.
    pub problems: Vec<VerifyProblem>,
    /// Objects no catalog row knows (their store keys).
    pub orphans: Vec<String>,
    /// How many of the orphans were removed.
    pub orphans_removed: u64,
    /// Objects in the blob area whose keys checkpointd did not make (never deleted).
    pub foreign_objects: u64,
    /// The first of them by key (up to 100 per slice).
    pub foreign: Vec<String>,
    /// Where to continue with [`Client::verify`]; `None` when everything has been checked.
    pub next_cursor: Option<String>,
}

impl From<pb::RetentionPolicy> for RetentionPolicy {
    fn from(p: pb::RetentionPolicy) -> Self {
        RetentionPolicy {
            session_id: p.session_id,
            branch: non_empty(p.branch),
            policy: p.policy,
            source: p.source,
        }
    }
}

impl From<pb::CollectReport> for CollectReport {
    fn from(r: pb::CollectReport) -> Self {
        CollectReport {
            dry_run: r.dry_run,
            epoch: r.epoch,
            sessions_examined: r.sessions_examined,
            checkpoints_examined: r.checkpoints_examined,
            checkpoints_deleted: r.checkpoints_deleted,
            groups_refused: r.groups_refused,
            blobs_live: r.blobs_live,
            chunks_deleted: r.chunks_deleted,
            pages_deleted: r.pages_deleted,
            bytes_freed: r.bytes_freed,
            objects_deleted: r.objects_deleted,
            orphans_deleted: r.orphans_deleted,
            orphan_bytes_freed: r.orphan_bytes_freed,
            retain: Duration::from_millis(r.retain_ms),
            mark: Duration::from_millis(r.mark_ms),
            sweep: Duration::from_millis(r.sweep_ms),
            reclaim: Duration::from_millis(r.reclaim_ms),
        }
    }
}

impl TryFrom<pb::RetentionDecision> for RetentionDecision {
    type Error = Error;
    fn try_from(d: pb::RetentionDecision) -> Result<Self, Error> {
        Ok(RetentionDecision {
            created_at: timestamp("RetentionDecision.create_time", d.create_time)?,
            session_id: d.session_id,
            branch: d.branch,
            checkpoint_id: d.checkpoint_id,
            keep: d.keep,
            reasons: d.reasons,
            policy: d.policy,
        })
    }
}

impl TryFrom<pb::CollectResponse> for Collection {
    type Error = Error;
    fn try_from(r: pb::CollectResponse) -> Result<Self, Error> {
        let report = r.report.ok_or_else(|| missing("CollectResponse.report"))?;
        Ok(Collection {
            report: CollectReport::from(report),
            decisions: convert_all(r.decisions)?,
        })
    }
}

impl From<pb::VerifyProblem> for VerifyProblem {
    fn from(p: pb::VerifyProblem) -> Self {
        VerifyProblem {
            checkpoint_id: p.checkpoint_id,
            blob: p.blob,
            kind: p.kind,
            detail: p.detail,
        }
    }
}

impl From<pb::VerifyResponse> for VerifyReport {
    fn from(r: pb::VerifyResponse) -> Self {
        VerifyReport {
            checkpoints_checked: r.checkpoints_checked,
            blobs_checked: r.blobs_checked,
            bytes_checked: r.bytes_checked,
            objects_listed: r.objects_listed,
            problems: r.problems.into_iter().map(VerifyProblem::from).collect(),
            orphans: r.orphans,
            orphans_removed: r.orphans_removed,
            foreign_objects: r.foreign_objects,
            foreign: r.foreign,
            next_cursor: non_empty(r.next_cursor),
        }
    }
}

impl VerifyReport {
    /// Adds one slice's findings to these totals and takes its cursor.
    fn absorb(&mut self, slice: VerifyReport) {
        self.checkpoints_checked += slice.checkpoints_checked;
        self.blobs_checked += slice.blobs_checked;
        self.bytes_checked += slice.bytes_checked;
        self.objects_listed += slice.objects_listed;
        self.problems.extend(slice.problems);
        self.orphans.extend(slice.orphans);
        self.orphans_removed += slice.orphans_removed;
        self.foreign_objects += slice.foreign_objects;
        self.foreign.extend(slice.foreign);
        self.next_cursor = slice.next_cursor;
    }
}

impl Client {
    /// Sets the retention policy of a session, or of one of its branches (`branch`), and
    /// returns the policy that now applies there. See `ckpt retention --help` for the syntax.
    pub async fn set_retention_policy(
        &self,
        session_id: &str,
        branch: Option<&str>,
        policy: &str,
    ) -> Result<RetentionPolicy, Error> {
        let request = pb::SetRetentionPolicyRequest {
            session_id: session_id.into(),
            branch: branch.unwrap_or_default().into(),
            policy: policy.into(),
            clear: false,
        };
        let response = self.raw().set_retention_policy(request).await?;
        Ok(RetentionPolicy::from(response.into_inner()))
    }

    /// Removes the override of a session or branch, so the session's policy or the
    /// deployment's default applies again; returns the policy that now applies.
    pub async fn clear_retention_policy(
        &self,
        session_id: &str,
        branch: Option<&str>,
    ) -> Result<RetentionPolicy, Error> {
        let request = pb::SetRetentionPolicyRequest {
            session_id: session_id.into(),
            branch: branch.unwrap_or_default().into(),
            policy: String::new(),
            clear: true,
        };
        let response = self.raw().set_retention_policy(request).await?;
        Ok(RetentionPolicy::from(response.into_inner()))
    }

    /// The retention policy that applies to a session or one of its branches, and where it
    /// comes from.
    pub async fn retention_policy(
        &self,
        session_id: &str,
        branch: Option<&str>,
    ) -> Result<RetentionPolicy, Error> {
        let request = pb::GetRetentionPolicyRequest {
            session_id: session_id.into(),
            branch: branch.unwrap_or_default().into(),
        };
        let response = self.raw().get_retention_policy(request).await?;
        Ok(RetentionPolicy::from(response.into_inner()))
    }

    /// Runs a collection pass: retention drops the checkpoints it no longer keeps, then blobs
    /// no checkpoint references are freed. Writes go on meanwhile. Fails with
    /// [`Error::Aborted`] while another pass runs anywhere in the deployment.
    pub async fn collect(&self, options: &CollectOptions) -> Result<Collection, Error> {
        let request = pb::CollectRequest {
            dry_run: options.dry_run,
            session_id: options.session_id.clone().unwrap_or_default(),
            skip_retention: options.skip_retention,
            explain: options.explain,
        };
        let response = self.raw().collect(request).await?;
        Collection::try_from(response.into_inner())
    }

    /// Verifies one slice of the store: the blobs of up to `limit` checkpoints (0 lets the
    /// server choose, 1,000) are present and hash right; once checkpoints run out, objects no
    /// catalog row knows are listed as orphans, and removed when `remove_orphans` is set and
    /// they are older than the upload lease. `session_id` restricts the check to one session;
    /// `cursor` is the [`VerifyReport::next_cursor`] of the previous slice, `None` to start.
    pub async fn verify(
        &self,
        session_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
        remove_orphans: bool,
    ) -> Result<VerifyReport, Error> {
        let request = pb::VerifyRequest {
            session_id: session_id.unwrap_or_default().into(),
            cursor: cursor.unwrap_or_default().into(),
            limit,
            remove_orphans,
        };
        let response = self.raw().verify(request).await?;
        Ok(VerifyReport::from(response.into_inner()))
    }

    /// Verifies every slice, as [`verify`](Self::verify) does one, until the cursor runs out:
    /// counts are summed, problems and orphans concatenated, and `next_cursor` is `None`.
    pub async fn verify_all(
        &self,
        session_id: Option<&str>,
        limit: u32,
        remove_orphans: bool,
    ) -> Result<VerifyReport, Error> {
        let mut total = VerifyReport::default();
        let mut cursor: Option<String> = None;
        loop {
            let slice = self
                .verify(session_id, cursor.as_deref(), limit, remove_orphans)
                .await?;
            let next = slice.next_cursor.clone();
            total.absorb(slice);
            if !advance(&mut cursor, next)? {
                return Ok(total);
            }
        }
    }
}

/// Moves `cursor` to `next`; false when verification is complete. A server that hands back
/// the cursor it was given would make the caller loop forever, so that is a protocol error.
fn advance(cursor: &mut Option<String>, next: Option<String>) -> Result<bool, Error> {
    let Some(next) = next else {
        return Ok(false);
    };
    if cursor.as_deref() == Some(next.as_str()) {
        return Err(Error::Protocol(
            "verify returned the same cursor twice".into(),
        ));
    }
    *cursor = Some(next);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_report() -> pb::CollectReport {
        pb::CollectReport {
            dry_run: true,
            sessions_examined: 2,
            checkpoints_examined: 30,
            checkpoints_deleted: 12,
            groups_refused: vec!["s2/main".into()],
            blobs_live: 400,
            chunks_deleted: 50,
            pages_deleted: 6,
            bytes_freed: 1_048_576,
            objects_deleted: 56,
            orphans_deleted: 1,
            orphan_bytes_freed: 10,
            retain_ms: 3,
            mark_ms: 1_500,
            sweep_ms: 0,
            reclaim_ms: 42,
            epoch: 9,
        }
    }

    fn wire_decision() -> pb::RetentionDecision {
        pb::RetentionDecision {
            session_id: "s1".into(),
            branch: "main".into(),
            checkpoint_id: "0193aaaa-0000-7000-8000-000000000001".into(),
            create_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            keep: true,
            reasons: vec!["head of branch main".into()],
            policy: "last=1".into(),
        }
    }

    #[test]
    fn collect_report_takes_durations_from_milliseconds() {
        let report = CollectReport::from(wire_report());
        assert_eq!(report.retain, Duration::from_millis(3));
        assert_eq!(report.mark, Duration::from_millis(1_500));
        assert_eq!(report.sweep, Duration::ZERO);
        assert_eq!(report.reclaim, Duration::from_millis(42));
        assert_eq!(report.epoch, 9);
        assert_eq!(report.groups_refused, ["s2/main"]);
        assert_eq!(report.bytes_freed, 1_048_576);
    }

    #[test]
    fn collection_converts_report_and_decisions() {
        let wire = pb::CollectResponse {
            report: Some(wire_report()),
            decisions: vec![wire_decision()],
        };
        let collection = Collection::try_from(wire).unwrap();
        assert_eq!(collection.report.checkpoints_deleted, 12);
        let decision = &collection.decisions[0];
        assert_eq!(decision.created_at.timestamp(), 1_700_000_000);
        assert!(decision.keep);
        assert_eq!(decision.reasons, ["head of branch main"]);
        assert_eq!(decision.policy, "last=1");
    }

    #[test]
    fn collection_without_report_names_the_field() {
        let wire = pb::CollectResponse {
            report: None,
            decisions: vec![],
        };
        let err = Collection::try_from(wire).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert!(err.to_string().contains("CollectResponse.report"), "{err}");
    }

    #[test]
    fn decision_without_create_time_names_the_field() {
        let mut decision = wire_decision();
        decision.create_time = None;
        let wire = pb::CollectResponse {
            report: Some(wire_report()),
            decisions: vec![decision],
        };
        let err = Collection::try_from(wire).unwrap_err();
        assert!(
            err.to_string().contains("RetentionDecision.create_time"),
            "{err}"
        );
    }

    #[test]
    fn retention_policy_with_empty_branch_covers_the_session() {
        let wire = pb::RetentionPolicy {
            session_id: "s1".into(),
            branch: String::new(),
            policy: "last=5".into(),
            source: "session".into(),
        };
        let policy = RetentionPolicy::from(wire.clone());
        assert_eq!(policy.branch, None);
        assert_eq!(policy.source, "session");

        let on_branch = RetentionPolicy::from(pb::RetentionPolicy {
            branch: "main".into(),
            ..wire
        });
        assert_eq!(on_branch.branch.as_deref(), Some("main"));
    }

    #[test]
    fn verify_response_with_empty_cursor_is_done() {
        let wire = pb::VerifyResponse {
            checkpoints_checked: 3,
            blobs_checked: 7,
            bytes_checked: 100,
            objects_listed: 0,
            problems: vec![pb::VerifyProblem {
                checkpoint_id: "c1".into(),
                blob: "b1".into(),
                kind: "missing".into(),
                detail: "no object".into(),
            }],
            orphans: vec![],
            orphans_removed: 0,
            foreign_objects: 2,
            foreign: vec!["README".into()],
            next_cursor: String::new(),
        };
        let report = VerifyReport::from(wire.clone());
        assert_eq!(report.next_cursor, None);
        assert_eq!(report.foreign_objects, 2);
        assert_eq!(report.problems[0].kind, "missing");

        let sliced = VerifyReport::from(pb::VerifyResponse {
            next_cursor: "c:42".into(),
            ..wire
        });
        assert_eq!(sliced.next_cursor.as_deref(), Some("c:42"));
    }

    #[test]
    fn absorb_sums_counts_and_concatenates_findings() {
        let problem = |id: &str| VerifyProblem {
            checkpoint_id: id.into(),
            blob: "b".into(),
            kind: "damaged".into(),
            detail: "hash mismatch".into(),
        };
        let mut total = VerifyReport::default();
        total.absorb(VerifyReport {
            checkpoints_checked: 2,
            blobs_checked: 5,
            bytes_checked: 10,
            problems: vec![problem("c1")],
            next_cursor: Some("x".into()),
            ..VerifyReport::default()
        });
        total.absorb(VerifyReport {
            objects_listed: 4,
            orphans: vec!["o1".into()],
            orphans_removed: 1,
            problems: vec![problem("c2")],
            next_cursor: None,
            ..VerifyReport::default()
        });
        assert_eq!(total.checkpoints_checked, 2);
        assert_eq!(total.objects_listed, 4);
        assert_eq!(total.problems, [problem("c1"), problem("c2")]);
        assert_eq!(total.orphans, ["o1"]);
        assert_eq!(total.orphans_removed, 1);
        assert_eq!(total.next_cursor, None);
    }

    #[test]
    fn advance_stops_at_the_end_and_refuses_a_repeated_cursor() {
        let mut cursor = None;
        assert!(advance(&mut cursor, Some("a".into())).unwrap());
        assert!(advance(&mut cursor, Some("b".into())).unwrap());
        assert_eq!(cursor.as_deref(), Some("b"));
        let err = advance(&mut cursor, Some("b".into())).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert!(!advance(&mut cursor, None).unwrap());
    }
}
