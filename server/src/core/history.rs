//! The history graph: ancestry tests and merge bases, using stored generation numbers
//! (a checkpoint's generation is one more than its highest parent's) to stop walks early.

use std::collections::{BinaryHeap, HashMap, HashSet};

use uuid::Uuid;

use super::engine::{Engine, EngineError};
use crate::catalog::Edge;

/// Generations fetched per round while looking for merge bases; doubled each round.
const FIRST_WINDOW: u64 = 64;

const SIDE_A: u8 = 1;
const SIDE_B: u8 = 2;
const STALE: u8 = 4;
const RESULT: u8 = 8;

impl Engine {
    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub async fn is_ancestor(&self, ancestor: Uuid, descendant: Uuid) -> Result<bool, EngineError> {
        if ancestor == descendant {
            return Ok(true);
        }
        let a = self.checkpoint(ancestor).await?;
        let d = self.checkpoint(descendant).await?;
        if a.session != d.session || a.generation >= d.generation {
            return Ok(false);
        }
        // Nothing below the ancestor's generation can lead to it.
        let edges = self.catalog.edges(&[descendant], a.generation).await?;
        Ok(edges.iter().any(|e| e.id == ancestor))
    }

    /// The best common ancestors of the two sides: common ancestors that are not ancestors of
    /// another common ancestor. Several come back for criss-cross histories; none when the
    /// sides share no history.
    pub async fn merge_bases(&self, a: &[Uuid], b: &[Uuid]) -> Result<Vec<Uuid>, EngineError> {
        let roots: Vec<Uuid> = a.iter().chain(b).copied().collect();
        let top = self
            .catalog
            .checkpoints(&roots)
            .await?
            .iter()
            .map(|c| c.generation)
            .max()
            .unwrap_or(0);
        let mut window = FIRST_WINDOW;
        loop {
            let floor = top.saturating_sub(window);
            let edges = self.catalog.edges(&roots, floor).await?;
            let graph: HashMap<Uuid, Edge> = edges.into_iter().map(|e| (e.id, e)).collect();
            match paint_down(&graph, a, b, floor) {
                Walk::Done(bases) => return Ok(bases),
                Walk::Pruned(at) => {
                    return Err(EngineError::FailedPrecondition(format!(
                        "the merge base cannot be known: the histories meet beyond checkpoint {at}'s \
                         deleted parent; merging without it could resurrect deleted keys or revert changes"
                    )));
                }
                Walk::NeedsMore => {}
            }
            if floor == 0 {
                return Err(EngineError::Internal(
                    "merge-base walk left the graph".into(),
                ));
            }
            window *= 2;
        }
    }
}

/// How a walk over a fetched part of the graph ended.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// The best common ancestors.
    Done(Vec<Uuid>),
    /// The walk needs checkpoints below what was fetched.
    NeedsMore,
    /// The walk reached a deleted parent while still searching (from this checkpoint): a
    /// common ancestor may lie beyond it, so no answer is trustworthy.
    Pruned(Uuid),
}

/// git's paint-down-to-common over the part of the graph fetched down to generation `floor`
/// (checkpoints below it are present but their parents are not).
fn paint_down(graph: &HashMap<Uuid, Edge>, a: &[Uuid], b: &[Uuid], floor: u64) -> Walk {
    match paint(graph, a, b, floor) {
        Ok(bases) => Walk::Done(bases),
        Err(walk) => walk,
    }
}

fn paint(
    graph: &HashMap<Uuid, Edge>,
    a: &[Uuid],
    b: &[Uuid],
    floor: u64,
) -> Result<Vec<Uuid>, Walk> {
    let mut flags: HashMap<Uuid, u8> = HashMap::new();
    let mut queue = BinaryHeap::new();
    for (ids, side) in [(a, SIDE_A), (b, SIDE_B)] {
        for id in ids {
            *flags.entry(*id).or_default() |= side;
            let edge = graph.get(id).ok_or(Walk::NeedsMore)?;
            queue.push((edge.generation, *id));
        }
    }
    let mut found = Vec::new();
    while queue.iter().any(|(_, id)| flags[id] & STALE == 0) {
        let (_, id) = queue.pop().ok_or(Walk::NeedsMore)?;
        let mut own = flags[&id];
        if own & (SIDE_A | SIDE_B) == SIDE_A | SIDE_B {
            if own & RESULT == 0 {
                found.push(id);
            }
            own |= STALE | RESULT;
            flags.insert(id, own);
        }
        let carried = own & (SIDE_A | SIDE_B | STALE);
        let edge = graph.get(&id).ok_or(Walk::NeedsMore)?;
        for parent in &edge.parents {
            let Some(parent_edge) = graph.get(parent) else {
                // Below the floor the parent was not fetched: widen the window. Above it, the
                // parent was deleted: harmless below a common ancestor already found (stale),
                // fatal while the walk is still searching.
                if edge.generation < floor {
                    return Err(Walk::NeedsMore);
                }
                if own & STALE == 0 {
                    return Err(Walk::Pruned(id));
                }
                continue;
            };
            let entry = flags.entry(*parent).or_default();
            if *entry & carried != carried {
                *entry |= carried;
                queue.push((parent_edge.generation, *parent));
            }
        }
    }
    Ok(remove_redundant(graph, found))
}

/// Drops common ancestors that are ancestors of other ones.
fn remove_redundant(graph: &HashMap<Uuid, Edge>, found: Vec<Uuid>) -> Vec<Uuid> {
    let reachable = |from: Uuid| -> HashSet<Uuid> {
        let mut seen = HashSet::new();
        let mut stack: Vec<Uuid> = graph
            .get(&from)
            .map(|e| e.parents.clone())
            .unwrap_or_default();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(
                    graph
                        .get(&id)
                        .into_iter()
                        .flat_map(|e| e.parents.iter().copied()),
                );
            }
        }
        seen
    };
    let below: HashSet<Uuid> = found.iter().flat_map(|id| reachable(*id)).collect();
    let mut bases: Vec<Uuid> = found.into_iter().filter(|id| !below.contains(id)).collect();
    bases.sort();
    bases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(u128, &[u128], u64)]) -> HashMap<Uuid, Edge> {
        edges
            .iter()
            .map(|(id, parents, generation)| {
                let e = Edge {
                    id: Uuid::from_u128(*id),
                    parents: parents.iter().map(|p| Uuid::from_u128(*p)).collect(),
                    generation: *generation,
                };
                (e.id, e)
            })
            .collect()
    }

    fn ids(v: &[u128]) -> Vec<Uuid> {
        v.iter().map(|i| Uuid::from_u128(*i)).collect()
    }

    #[test]
    fn a_fork_has_its_fork_point_as_base() {
        // 1 - 2 - 3 (a)
        //      \- 4 - 5 (b)
        let g = graph(&[
            (1, &[], 1),
            (2, &[1], 2),
            (3, &[2], 3),
            (4, &[2], 3),
            (5, &[4], 4),
        ]);
        assert_eq!(
            paint_down(&g, &ids(&[3]), &ids(&[5]), 0),
            Walk::Done(ids(&[2]))
        );
        assert_eq!(
            paint_down(&g, &ids(&[5]), &ids(&[2]), 0),
            Walk::Done(ids(&[2]))
        );
    }

    #[test]
    fn criss_cross_histories_have_two_bases() {
        //   1 - 2 ---- 4 (merges 3) - 6 (a)
        //    \      X
        //     - 3 ---- 5 (merges 2) - 7 (b)
        let g = graph(&[
            (1, &[], 1),
            (2, &[1], 2),
            (3, &[1], 2),
            (4, &[2, 3], 3),
            (5, &[3, 2], 3),
            (6, &[4], 4),
            (7, &[5], 4),
        ]);
        assert_eq!(
            paint_down(&g, &ids(&[6]), &ids(&[7]), 0),
            Walk::Done(ids(&[2, 3]))
        );
    }

    #[test]
    fn unrelated_histories_have_no_base() {
        let g = graph(&[(1, &[], 1), (2, &[1], 2), (3, &[], 1)]);
        assert_eq!(
            paint_down(&g, &ids(&[2]), &ids(&[3]), 0),
            Walk::Done(vec![])
        );
    }

    /// Regression: with the fork point deleted, both sides looked unrelated and a merge
    /// brought back a key one side had deleted.
    #[test]
    fn a_deleted_fork_point_is_reported_not_walked_past() {
        // 1 - (2, deleted) - 3 (a)
        //                  \- 4 (b)
        let g = graph(&[(1, &[], 1), (3, &[2], 3), (4, &[2], 3)]);
        assert_eq!(
            paint_down(&g, &ids(&[3]), &ids(&[4]), 0),
            Walk::Pruned(Uuid::from_u128(4))
        );
        // A deleted checkpoint below a common ancestor changes nothing.
        let g = graph(&[(2, &[1], 2), (3, &[2], 3), (4, &[2], 3)]);
        assert_eq!(
            paint_down(&g, &ids(&[3]), &ids(&[4]), 0),
            Walk::Done(ids(&[2]))
        );
    }

    #[test]
    fn a_walk_past_the_fetched_window_asks_for_more() {
        // Fetched down to generation 11: 10 and 12 are there, their parents are not.
        let g = graph(&[(10, &[9], 10), (11, &[10], 11), (12, &[8], 10)]);
        assert_eq!(
            paint_down(&g, &ids(&[11]), &ids(&[12]), 11),
            Walk::NeedsMore
        );
    }
}
