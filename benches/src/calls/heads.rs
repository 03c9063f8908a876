//! The sessions a writing worker owns, with their heads. Every write names its session's head
//! as parent (the server refuses any other); a write whose outcome is unknown (it timed out)
//! leaves a stale head, which the next write's conflict reports back.

use ckpt_client::{Checkpoint, Error};

use super::Failure;

/// A worker's sessions, written round-robin.
#[derive(Debug)]
pub(crate) struct OwnedSessions {
    /// Session id and head (`None` while the session is empty).
    sessions: Vec<(String, Option<String>)>,
    next: usize,
}

impl OwnedSessions {
    /// Sessions with their current heads; must not be empty.
    pub(crate) fn new(sessions: Vec<(String, Option<String>)>) -> Self {
        assert!(!sessions.is_empty(), "a writer needs a session");
        OwnedSessions { sessions, next: 0 }
    }

    /// The next session to write to: its index, id and head.
    pub(crate) fn next(&mut self) -> (usize, String, Option<String>) {
        let i = self.next % self.sessions.len();
        self.next += 1;
        let (id, head) = &self.sessions[i];
        (i, id.clone(), head.clone())
    }

    /// Moves session `i`'s head after a write: to the new checkpoint, or to the head a
    /// conflict reported.
    pub(crate) fn settle(&mut self, i: usize, result: &Result<Checkpoint, Failure>) {
        let head = &mut self.sessions[i].1;
        match result {
            Ok(checkpoint) => *head = Some(checkpoint.id.clone()),
            Err(Failure::Call(err @ Error::Aborted { .. })) => {
                *head = err.current_head().map(str::to_owned);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_written_round_robin() {
        let mut owned = OwnedSessions::new(vec![("a".into(), None), ("b".into(), None)]);
        let order: Vec<String> = (0..3).map(|_| owned.next().1).collect();
        assert_eq!(order, ["a", "b", "a"]);
    }

    #[test]
    fn a_conflict_moves_the_head_to_the_reported_one() {
        let mut owned = OwnedSessions::new(vec![("a".into(), Some("old".into()))]);
        let conflict = Failure::Call(Error::Aborted {
            message: "branch main has moved".into(),
            current_head: Some("new".into()),
        });
        owned.settle(0, &Err(conflict));
        assert_eq!(owned.next().2.as_deref(), Some("new"));

        owned.settle(0, &Err(Failure::Timeout(std::time::Duration::from_secs(1))));
        assert_eq!(owned.next().2.as_deref(), Some("new"));
    }
}
