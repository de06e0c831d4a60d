//! The fixed-capacity housekeeping queue inside the lifecycle machine.
//!
//! Tasks live in caller-provided [`TaskSlot`]s. Order is by task id, which only grows, so the
//! queue runs tasks first-in first-out even though a freed slot is reused by a later task.

use crate::journal::{JOURNAL_TASKS_MAX, JournalTask};

use super::TaskId;

/// Storage for one housekeeping task, handed to the lifecycle machine at construction.
///
/// Opaque: build arrays of them with [`TaskSlot::EMPTY`] (or `Default`), one per task the queue
/// must hold at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskSlot {
    entry: Option<Entry>,
}

impl TaskSlot {
    /// A free slot.
    pub const EMPTY: TaskSlot = TaskSlot { entry: None };
}

/// Where a queued task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Waiting for its `RunTask` effect.
    Pending,
    /// Handed to the host; waiting for its report.
    Running,
    /// Written into the journal at the housekeeping deadline; ends with the stop.
    Sealed,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) id: TaskId,
    pub(crate) task: JournalTask,
    pub(crate) status: Status,
    /// Came back from a journal at start (runs while the tunnel is up).
    pub(crate) carried: bool,
}

/// The queue over the caller's slots.
#[derive(Debug)]
pub(crate) struct TaskQueue<S> {
    slots: S,
    len: usize,
}

impl<S> TaskQueue<S>
where
    S: AsRef<[TaskSlot]> + AsMut<[TaskSlot]>,
{
    /// A queue over `slots`; every slot is cleared first.
    pub(crate) fn new(mut slots: S) -> Self {
        for slot in slots.as_mut() {
            *slot = TaskSlot::EMPTY;
        }
        TaskQueue { slots, len: 0 }
    }

    /// How many tasks fit: the slots handed in, capped at what one journal can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.as_ref().len().min(JOURNAL_TASKS_MAX)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn free(&self) -> usize {
        self.capacity().saturating_sub(self.len)
    }

    /// Store a task; hands back `false` (and stores nothing) when full.
    pub(crate) fn push(&mut self, id: TaskId, task: JournalTask, carried: bool) -> bool {
        if self.free() == 0 {
            return false;
        }
        let capacity = self.capacity();
        let Some(slot) = self
            .slots
            .as_mut()
            .iter_mut()
            .take(capacity)
            .find(|slot| slot.entry.is_none())
        else {
            return false;
        };
        slot.entry = Some(Entry {
            id,
            task,
            status: Status::Pending,
            carried,
        });
        self.len = self.len.saturating_add(1);
        true
    }

    pub(crate) fn find_mut(&mut self, id: TaskId) -> Option<&mut Entry> {
        self.entries_mut().find(|entry| entry.id == id)
    }

    /// Remove a task, handing back what it was.
    pub(crate) fn remove(&mut self, id: TaskId) -> Option<Entry> {
        let slot = self
            .slots
            .as_mut()
            .iter_mut()
            .find(|slot| slot.entry.is_some_and(|entry| entry.id == id))?;
        let entry = slot.entry.take();
        self.len = self.len.saturating_sub(1);
        entry
    }

    /// The oldest pending task (only carried-over ones if `carried_only`).
    pub(crate) fn oldest_pending_mut(&mut self, carried_only: bool) -> Option<&mut Entry> {
        self.entries_mut()
            .filter(|entry| entry.status == Status::Pending && (entry.carried || !carried_only))
            .min_by_key(|entry| entry.id)
    }

    pub(crate) fn count(&self, status: Status) -> usize {
        self.entries()
            .filter(|entry| entry.status == status)
            .count()
    }

    /// Mark every task sealed into the journal; returns how many.
    pub(crate) fn seal_all(&mut self) -> usize {
        let mut sealed = 0usize;
        for entry in self.entries_mut() {
            entry.status = Status::Sealed;
            sealed = sealed.saturating_add(1);
        }
        sealed
    }

    /// The sealed tasks in queue order, for the journal writer.
    pub(crate) fn sealed(&self) -> SealedTasks<'_> {
        SealedTasks {
            slots: self.slots.as_ref(),
            after: None,
        }
    }

    pub(crate) fn clear(&mut self) {
        for slot in self.slots.as_mut() {
            *slot = TaskSlot::EMPTY;
        }
        self.len = 0;
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots
            .as_ref()
            .iter()
            .filter_map(|slot| slot.entry.as_ref())
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.slots
            .as_mut()
            .iter_mut()
            .filter_map(|slot| slot.entry.as_mut())
    }
}

/// Sealed tasks in id order. Each step scans the slots for the next larger id: quadratic, but
/// it runs once per stop over a queue sized for housekeeping (tens of tasks), and it needs no
/// scratch space.
#[derive(Clone, Debug)]
pub(crate) struct SealedTasks<'a> {
    slots: &'a [TaskSlot],
    after: Option<TaskId>,
}

impl Iterator for SealedTasks<'_> {
    type Item = JournalTask;

    fn next(&mut self) -> Option<JournalTask> {
        let after = self.after;
        let next = self
            .slots
            .iter()
            .filter_map(|slot| slot.entry.as_ref())
            .filter(|entry| entry.status == Status::Sealed)
            .filter(|entry| after.is_none_or(|after| entry.id > after))
            .min_by_key(|entry| entry.id)?;
        self.after = Some(next.id);
        Some(next.task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::TaskPayload;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn task(kind: u32) -> JournalTask {
        JournalTask {
            kind,
            payload: TaskPayload::new(&kind.to_le_bytes()).unwrap(),
        }
    }

    #[test]
    fn full_queue_refuses_and_reuses_freed_slots_in_id_order() {
        let mut queue = TaskQueue::new([TaskSlot::EMPTY; 3]);
        assert!(queue.push(TaskId(1), task(1), false));
        assert!(queue.push(TaskId(2), task(2), false));
        assert!(queue.push(TaskId(3), task(3), false));
        assert!(!queue.push(TaskId(4), task(4), false));
        assert_eq!(queue.len(), 3);
        assert!(queue.remove(TaskId(1)).is_some());
        assert!(queue.push(TaskId(5), task(5), false));
        // Slot 0 now holds id 5, but id 2 is still the oldest.
        assert_eq!(queue.oldest_pending_mut(false).unwrap().id, TaskId(2));
        assert_eq!(queue.seal_all(), 3);
        let kinds: Vec<u32> = queue.sealed().map(|t| t.kind).collect();
        assert_eq!(kinds, vec![2, 3, 5]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(bool),
        Remove(u8),
        Start,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Push),
            any::<u8>().prop_map(Op::Remove),
            Just(Op::Start),
        ]
    }

    proptest! {

        #![proptest_config(crate::proptest_config::default_cases())]

        /// The queue behaves like an ordered map from id to (carried, running), capacity-bound.
        #[test]
        fn queue_matches_ordered_map_model(
            capacity in 0usize..7,
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let mut queue = TaskQueue::new(vec![TaskSlot::EMPTY; capacity]);
            let mut model: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
            let mut next = 1u64;
            for op in ops {
                match op {
                    Op::Push(carried) => {
                        let accepted = queue.push(TaskId(next), task(next as u32), carried);
                        prop_assert_eq!(accepted, model.len() < capacity);
                        if accepted {
                            model.insert(next, (carried, false));
                        }
                        next += 1;
                    }
                    Op::Remove(pick) => {
                        let id = u64::from(pick) % next.max(1);
                        let removed = queue.remove(TaskId(id)).map(|e| e.id.0);
                        prop_assert_eq!(removed, model.remove(&id).map(|_| id));
                    }
                    Op::Start => {
                        let expected = model.iter().find(|(_, (_, running))| !running).map(|(id, _)| *id);
                        let got = queue.oldest_pending_mut(false).map(|entry| {
                            entry.status = Status::Running;
                            entry.id.0
                        });
                        prop_assert_eq!(got, expected);
                        if let Some(id) = expected {
                            model.get_mut(&id).unwrap().1 = true;
                        }
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert_eq!(
                    queue.count(Status::Running),
                    model.values().filter(|(_, running)| *running).count()
                );
            }
            queue.seal_all();
            let sealed: Vec<u32> = queue.sealed().map(|t| t.kind).collect();
            let expected: Vec<u32> = model.keys().map(|id| *id as u32).collect();
            prop_assert_eq!(sealed, expected);
        }
    }
}
