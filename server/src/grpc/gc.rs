//! Handlers of retention, collection and verify.

use std::sync::Arc;

use ckpt_proto::v1;
use tonic::Status;
use tracing::info;

use super::convert::timestamp;
use crate::core::retention::Policy;
use crate::core::{
    CollectOptions, CollectReport, Engine, PolicySource, ProblemKind, VerifyOptions,
};

fn policy_message(
    session: &str,
    branch: &str,
    (policy, source): (Policy, PolicySource),
) -> v1::RetentionPolicy {
    v1::RetentionPolicy {
        session_id: session.to_owned(),
        branch: branch.to_owned(),
        policy: policy.to_string(),
        source: source.as_str().to_owned(),
    }
}

pub(super) async fn set_retention_policy(
    engine: &Engine,
    req: v1::SetRetentionPolicyRequest,
) -> Result<v1::RetentionPolicy, Status> {
    let applied = engine
        .set_retention_policy(&req.session_id, &req.branch, &req.policy, req.clear)
        .await?;
    info!(session = %req.session_id, branch = %req.branch, policy = %applied.0, "retention policy set");
    Ok(policy_message(&req.session_id, &req.branch, applied))
}

pub(super) async fn get_retention_policy(
    engine: &Engine,
    req: v1::GetRetentionPolicyRequest,
) -> Result<v1::RetentionPolicy, Status> {
    let applied = engine
        .retention_policy(&req.session_id, &req.branch)
        .await?;
    Ok(policy_message(&req.session_id, &req.branch, applied))
}

pub(super) async fn collect(
    engine: &Arc<Engine>,
    req: v1::CollectRequest,
) -> Result<v1::CollectResponse, Status> {
    let options = CollectOptions {
        dry_run: req.dry_run,
        session: Some(req.session_id).filter(|s| !s.is_empty()),
        skip_retention: req.skip_retention,
        explain: req.explain,
    };
    let mut report = engine.collect(options).await?;
    let decisions = std::mem::take(&mut report.decisions)
        .into_iter()
        .map(|d| v1::RetentionDecision {
            session_id: d.session,
            branch: d.branch,
            checkpoint_id: d.checkpoint.to_string(),
            create_time: Some(timestamp(d.created_at)),
            keep: d.keep,
            reasons: d.reasons,
            policy: d.policy,
        })
        .collect();
    Ok(v1::CollectResponse {
        report: Some(report_message(report)),
        decisions,
    })
}

fn report_message(r: CollectReport) -> v1::CollectReport {
    v1::CollectReport {
        dry_run: r.dry_run,
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
        retain_ms: r.retain_ms,
        mark_ms: r.mark_ms,
        sweep_ms: r.sweep_ms,
        reclaim_ms: r.reclaim_ms,
        epoch: r.epoch,
    }
}

pub(super) async fn verify(
    engine: &Arc<Engine>,
    req: v1::VerifyRequest,
) -> Result<v1::VerifyResponse, Status> {
    let options = VerifyOptions {
        session: Some(req.session_id).filter(|s| !s.is_empty()),
        cursor: Some(req.cursor).filter(|c| !c.is_empty()),
        limit: if req.limit == 0 { 1000 } else { req.limit },
        remove_orphans: req.remove_orphans,
    };
    let report = engine.verify(options).await?;
    let problems = report
        .problems
        .into_iter()
        .map(|p| v1::VerifyProblem {
            checkpoint_id: p.checkpoint.to_string(),
            blob: p.blob.to_hex(),
            kind: match p.kind {
                ProblemKind::Missing => "missing",
                ProblemKind::Damaged => "damaged",
            }
            .to_owned(),
            detail: p.detail,
        })
        .collect();
    Ok(v1::VerifyResponse {
        checkpoints_checked: report.checkpoints_checked,
        blobs_checked: report.blobs_checked,
        bytes_checked: report.bytes_checked,
        objects_listed: report.objects_listed,
        problems,
        orphans: report.orphans,
        orphans_removed: report.orphans_removed,
        foreign_objects: report.foreign_objects,
        foreign: report.foreign,
        next_cursor: report.next_cursor.unwrap_or_default(),
    })
}
