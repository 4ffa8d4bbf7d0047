//! This node's lock changes on their way to the inventory's multicast.
//!
//! The registry queues each change while it holds its table lock, so the queue's order is the
//! table's. Queuing wakes the cluster task, which multicasts what is queued; but a change made
//! by a request served on a connection thread wakes it only once that request has been
//! answered ([`AnswerFirst`]). On a node with one CPU the woken task otherwise runs its
//! multicast (a round trip to corosync) before the request's answer is written, and the VM
//! waits for it. That is safe because the inventory only informs (the DLM holds the
//! exclusion), and the order is kept: the changes sit in the one queue meanwhile, and a wake
//! for any later change sends them too.

use super::wire::LockChange;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

/// The queue between the registry and the cluster task.
#[derive(Default)]
pub struct Changes {
    queue: Mutex<VecDeque<LockChange>>,
    ready: Notify,
}

thread_local! {
    /// Inside [`AnswerFirst`]: the queues whose wake waits for this thread's answer.
    static HELD: RefCell<Option<Vec<Arc<Changes>>>> = const { RefCell::new(None) };
}

impl Changes {
    /// Queues a change (call with the registry's table lock held) and wakes the cluster task,
    /// now or, on a thread inside [`AnswerFirst`], when it ends.
    pub fn push(self: &Arc<Self>, change: LockChange) {
        self.queue.lock().push_back(change);
        let held = HELD.with(|h| match h.borrow_mut().as_mut() {
            Some(queues) => {
                if !queues.iter().any(|q| Arc::ptr_eq(q, self)) {
                    queues.push(self.clone());
                }
                true
            }
            None => false,
        });
        if !held {
            self.ready.notify_one();
        }
    }

    /// Everything queued, oldest first.
    pub fn take_all(&self) -> Vec<LockChange> {
        self.queue.lock().drain(..).collect()
    }

    /// Waits until a change was queued and its wake is due (at once if one came meanwhile).
    pub async fn ready(&self) {
        self.ready.notified().await
    }
}

/// While this lives, changes queued by this thread wake the cluster task only when it is
/// dropped: begun before a request is dispatched, dropped once its answer is written (or the
/// connection failed; a panic drops it too).
pub struct AnswerFirst {
    outer: Option<Vec<Arc<Changes>>>,
}

impl AnswerFirst {
    pub fn begin() -> AnswerFirst {
        AnswerFirst { outer: HELD.with(|h| h.borrow_mut().replace(Vec::new())) }
    }
}

impl Drop for AnswerFirst {
    fn drop(&mut self) {
        let held = HELD.with(|h| std::mem::replace(&mut *h.borrow_mut(), self.outer.take()));
        for q in held.into_iter().flatten() {
            q.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::mode::Mode;
    use proto::LockInfo;
    use std::time::Duration;

    fn change(n: u32) -> LockChange {
        LockChange::Released(LockInfo {
            resource: format!("d1:{n}"),
            identity: String::new(),
            mode: Mode::Ex,
            vm_name: String::new(),
            vm_uuid: String::new(),
            pid: n,
            node_name: String::new(),
            node_id: 1,
            since: 0,
            state: "held".into(),
        })
    }

    async fn woken(c: &Changes) -> bool {
        tokio::time::timeout(Duration::from_millis(50), c.ready()).await.is_ok()
    }

    #[tokio::test]
    async fn a_change_wakes_the_task_at_once_outside_a_request() {
        let c = Arc::new(Changes::default());
        c.push(change(1));
        assert!(woken(&c).await);
        assert_eq!(c.take_all().len(), 1);
    }

    /// Fails if a change made while a request is being answered wakes the task before the
    /// answer (e.g. with `push` notifying unconditionally).
    #[tokio::test]
    async fn changes_of_a_request_wake_the_task_after_its_answer_in_order() {
        let c = Arc::new(Changes::default());
        let answer = AnswerFirst::begin();
        c.push(change(1));
        c.push(change(2));
        assert!(!woken(&c).await, "woken before the answer");
        drop(answer);
        assert!(woken(&c).await, "not woken once answered");
        let got: Vec<String> = c
            .take_all()
            .into_iter()
            .map(|ch| match ch {
                LockChange::Released(i) | LockChange::Granted(i) => i.resource,
            })
            .collect();
        assert_eq!(got, ["d1:1", "d1:2"]);
        // And no stray wake is left behind for the next changes.
        assert!(!woken(&c).await);
    }
}
