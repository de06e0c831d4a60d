//! Flow queueing in fixed memory: the FQ-CoDel class (RFC 8290) for a tunnel's rings.
//!
//! Packets are hashed by flow ([`classify`]) into a fixed number of queues. Queues are served by
//! deficit round robin with a byte quantum; a queue that becomes active is served first (the
//! *new* list) for one quantum, so sparse flows (a ping, a DNS query, a TCP ACK stream) pass a
//! bulk flow without waiting behind it. Each queue runs its own CoDel, so a flow that builds a
//! standing queue loses packets and the others do not. When every cell is taken, a packet that
//! arrives is queued after dropping from the head of the *fattest* queue (the one holding the
//! most cells), so a flood pays for its own backlog instead of the newcomer.
//!
//! ## Storage: fixed cells
//!
//! Dequeuing out of arrival order leaves holes in a contiguous arena, so the contiguous ring of
//! FIFO mode does not fit here. The arena is instead cut into equal **cells**, one per packet,
//! each `max_packet_len` rounded up to the packet alignment; a packet always takes exactly one
//! cell and is contiguous in it, so the host still sends it without a copy. Why cells:
//!
//! - the ceiling is exact: `cells * cell_size` arena bytes, one 16-byte descriptor per cell and
//!   one 64-byte [`FlowQueue`] per queue, fixed at creation;
//! - the fit guarantee is one line: *a packet fits exactly when a cell is not in flight* (it is
//!   free, or it holds a queued packet that can be dropped), whatever was pushed before; there is
//!   no fragmentation and no compaction;
//! - every operation is O(1) except the overflow drop, which scans the queues for the fattest
//!   one and so drops up to half of it (at most 64 packets) at once, as Linux's fq_codel does,
//!   making the scan rare under a flood.
//!
//! The price is memory per packet: a 60-byte ACK takes a whole cell, so a ceiling holds fewer
//! small packets than FIFO mode's packed ring; size the cell count for full-size packets.
//!
//! Free cells are a last-in first-out stack, and cells never used are handed out in address order
//! only when the stack is empty, so a lightly loaded tunnel keeps touching the same few pages and
//! never dirties the rest of its arena.
//!
//! ## Order
//!
//! Packets of one flow (one queue) leave in the order they arrived; packets of different flows
//! do not, by design. Completions still release the oldest packets handed out first: handed-out
//! cells form one list in hand-out order.

mod classify;

use core::fmt;

use crate::aqm::{Codel, CodelParams, CodelQueue, Dropped};
use crate::ring::{CompleteError, InFlight, PushError, Released, RingLevels, Slot};
use crate::time::Instant;

#[cfg(test)]
pub(crate) use classify::tests::udp4;

/// The most flow queues a tunnel direction accepts.
pub const MAX_FLOW_QUEUES: u32 = 65_536;

/// The smallest deficit-round-robin quantum accepted, in bytes (as in Linux's fq_codel): a
/// smaller one would make a queue wait many rounds for a full-size packet.
pub const MIN_FLOW_QUANTUM: u32 = 256;

/// The most packets one overflow drops from the fattest queue.
const DROP_BATCH: u32 = 64;

/// No cell or no queue: the end of a list.
const NIL: u32 = u32::MAX;

/// The state of one flow queue: 64 bytes. Hosts only create storage for these, like [`Slot`]s:
/// `[FlowQueue::EMPTY; N]` on an embedded target, or a boxed slice on a host with an allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowQueue {
    /// Oldest and newest queued cell, or [`NIL`].
    head: u32,
    tail: u32,
    packets: u32,
    bytes: u32,
    /// Bytes the queue may still send in this round.
    deficit: i32,
    /// The next queue on the list this one is on.
    next: u32,
    list: Membership,
    codel: Codel,
}

impl FlowQueue {
    /// An empty, idle queue, to fill queue storage with.
    pub const EMPTY: FlowQueue = FlowQueue {
        head: NIL,
        tail: NIL,
        packets: 0,
        bytes: 0,
        deficit: 0,
        next: NIL,
        list: Membership::Idle,
        codel: Codel::IDLE,
    };
}

impl Default for FlowQueue {
    fn default() -> Self {
        FlowQueue::EMPTY
    }
}

/// Which round-robin list a queue is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    Idle,
    New,
    Old,
}

/// A singly linked list of queues or cells, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

/// The fixed parameters of one direction's flow queues.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlowSettings {
    /// Arena bytes per cell: the largest packet, rounded up to the packet alignment.
    pub(crate) cell_size: usize,
    pub(crate) max_packet: usize,
    pub(crate) quantum: u32,
    pub(crate) seed: [u8; 16],
    pub(crate) codel: CodelParams,
}

/// One direction's flow queues: an arena of cells, their descriptors and the queue table.
pub(crate) struct FlowQueues<B, S, F> {
    arena: B,
    /// One per cell; [`Slot::offset`] links the cell to the next one on its list.
    cells: S,
    queues: F,
    settings: FlowSettings,
    /// Top of the stack of free cells.
    free: u32,
    /// Cells from here on have never been used.
    fresh: u32,
    /// The most cells in use at once: the cell count, or fewer under memory pressure.
    cell_limit: usize,
    /// Handed-out cells, oldest first.
    flight: List,
    new_flows: List,
    old_flows: List,
    levels: RingLevels,
}

impl<B, S, F> FlowQueues<B, S, F>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
    F: AsRef<[FlowQueue]> + AsMut<[FlowQueue]>,
{
    /// Flow queues over `arena` (`cells.len() * cell_size` bytes), or `None` if the lengths
    /// disagree or a count does not fit the 32-bit indexes.
    pub(crate) fn new(arena: B, cells: S, mut queues: F, settings: FlowSettings) -> Option<Self> {
        let count = cells.as_ref().len();
        let fits = u32::try_from(count).is_ok_and(|n| n < NIL)
            && !queues.as_ref().is_empty()
            && queues.as_ref().len() <= MAX_FLOW_QUEUES as usize
            && settings.cell_size >= settings.max_packet
            && count.checked_mul(settings.cell_size) == Some(arena.as_ref().len());
        if !fits {
            return None;
        }
        queues.as_mut().fill(FlowQueue::EMPTY);
        Some(FlowQueues {
            arena,
            cells,
            queues,
            settings,
            free: NIL,
            fresh: 0,
            cell_limit: count,
            flight: List::EMPTY,
            new_flows: List::EMPTY,
            old_flows: List::EMPTY,
            levels: RingLevels::default(),
        })
    }

    pub(crate) fn levels(&self) -> RingLevels {
        self.levels
    }

    /// Cells holding a packet, queued or in flight.
    pub(crate) fn cells_used(&self) -> usize {
        self.levels
            .packets_queued
            .saturating_add(self.levels.packets_in_flight)
    }

    /// Packets queued or in flight: each holds one cell.
    pub(crate) fn packets_held(&self) -> usize {
        self.cells_used()
    }

    /// Arena bytes of the cells in use.
    pub(crate) fn bytes_used(&self) -> usize {
        self.cells_used().saturating_mul(self.settings.cell_size)
    }

    /// The most cells in use at once: the cell count, or fewer under memory pressure.
    pub(crate) fn cell_limit(&self) -> usize {
        self.cell_limit
    }

    /// Use at most `limit` cells (at least 1, at most the cell count) from the next push on.
    /// Cells used beyond it stay until handed out or dropped; a push past it drops from the
    /// fattest queue first. Free cells are reused last-in first-out, so a tunnel held to fewer
    /// cells keeps touching the same pages.
    pub(crate) fn set_cell_limit(&mut self, limit: usize) {
        // Not `clamp`, which panics when its bounds cross (no cells at all).
        self.cell_limit = limit.max(1).min(self.cells.as_ref().len());
    }

    /// Whether a push would be accepted now: fewer cells than the limit are in flight.
    pub(crate) fn can_take(&self) -> bool {
        self.levels.packets_in_flight < self.cell_limit
    }

    /// Queue a packet of `len` bytes (at most the cell size) written by `write`, dropping from
    /// the fattest queue first if every cell is taken. Refused, with nothing changed, only when
    /// every cell is in flight.
    pub(crate) fn push_with(
        &mut self,
        now: Instant,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<Dropped, PushError> {
        if len == 0 {
            return Err(PushError::Empty);
        }
        if len > self.settings.cell_size || !self.can_take() {
            debug_assert!(
                len <= self.settings.cell_size,
                "the tunnel checks lengths first"
            );
            return Err(PushError::Full);
        }
        let mut dropped = Dropped::default();
        // At the cell limit some cell is queued (fewer than the limit are in flight): drop from
        // the fattest queue until a cell may be taken. Each round drops at least one packet.
        while self.cells_used() >= self.cell_limit && self.levels.packets_queued > 0 {
            let round = self.drop_from_fattest();
            if round.packets == 0 {
                debug_assert!(false, "a queued packet sits in some queue");
                return Err(PushError::Full);
            }
            dropped.merge(round);
        }
        let Some(cell) = self.take_cell() else {
            debug_assert!(false, "below the cell limit a cell is free");
            return Err(PushError::Full);
        };
        let start = self.cell_start(cell);
        // `checked_add`: the cell is then exactly `len` long, which the optimiser sees, so the
        // caller's copy into it keeps no length-mismatch panic.
        let arena = self.arena.as_mut();
        let Some(dst) = start
            .checked_add(len)
            .and_then(|end| arena.get_mut(start..end))
        else {
            debug_assert!(false, "every cell lies inside the arena");
            self.release_cell(cell);
            return Err(PushError::Full);
        };
        write(dst);
        let hash = classify::flow_hash(dst, &self.settings.seed);
        let q = classify::queue_of(hash, self.queues.as_ref().len());
        let Self {
            cells,
            queues,
            new_flows,
            settings,
            ..
        } = self;
        let (cells, queues) = (cells.as_mut(), queues.as_mut());
        if let Some(slot) = cells.get_mut(cell as usize) {
            // `len` is at most the cell size, which the arena bound keeps below 2^31.
            *slot = Slot {
                offset: NIL,
                len: len as u32,
                enqueued_at: now,
            };
        }
        let Some(queue) = queues.get_mut(q) else {
            debug_assert!(false, "queue_of stays below the queue count");
            return Err(PushError::Full);
        };
        append_cell(queue, cells, cell);
        queue.bytes = queue.bytes.saturating_add(len as u32);
        if queue.list == Membership::Idle {
            queue.list = Membership::New;
            queue.deficit = settings.quantum as i32;
            push_queue(new_flows, queues, q as u32);
        }
        self.levels.packets_queued = self.levels.packets_queued.saturating_add(1);
        self.levels.bytes_queued = self.levels.bytes_queued.saturating_add(len);
        Ok(dropped)
    }

    /// Hand out the next packet by deficit round robin, new queues first, after each queue's
    /// CoDel has dropped what it decides. Returns what CoDel dropped and the packet with its
    /// enqueue time, or `None` if nothing is queued.
    pub(crate) fn handout(&mut self, now: Instant) -> (Dropped, Option<(Instant, &[u8])>) {
        let mut dropped = Dropped::default();
        let Self {
            arena,
            cells,
            queues,
            settings,
            free,
            flight,
            new_flows,
            old_flows,
            levels,
            ..
        } = self;
        let (cells, queues) = (cells.as_mut(), queues.as_mut());
        let arena: &[u8] = B::as_ref(arena);
        // Each pass either hands out, gives a queue its quantum and moves it to the old list, or
        // takes an empty queue off its list; with a quantum of at least `MIN_FLOW_QUANTUM` this
        // ends within a few passes per active queue.
        loop {
            let (from_new, q) = if new_flows.head != NIL {
                (true, new_flows.head)
            } else if old_flows.head != NIL {
                (false, old_flows.head)
            } else {
                return (dropped, None);
            };
            let Some(queue) = queues.get_mut(q as usize) else {
                debug_assert!(false, "lists hold queue indexes");
                return (dropped, None);
            };
            if queue.deficit <= 0 {
                queue.deficit = queue.deficit.saturating_add(settings.quantum as i32);
                queue.list = Membership::Old;
                let list = if from_new {
                    &mut *new_flows
                } else {
                    &mut *old_flows
                };
                pop_queue(list, queues);
                push_queue(old_flows, queues, q);
                continue;
            }
            let mut codel = queue.codel;
            let mut view = QueueView {
                queue,
                cells,
                free,
                levels,
            };
            dropped.merge(codel.before_handout(
                &settings.codel,
                now,
                &mut view,
                settings.max_packet,
            ));
            view.queue.codel = codel;
            if let Some((cell, slot)) = pop_cell(view.queue, view.cells) {
                let queue = view.queue;
                queue.deficit = queue.deficit.saturating_sub(slot.len as i32);
                queue.bytes = queue.bytes.saturating_sub(slot.len);
                let len = slot.len as usize;
                levels.packets_queued = levels.packets_queued.saturating_sub(1);
                levels.bytes_queued = levels.bytes_queued.saturating_sub(len);
                levels.packets_in_flight = levels.packets_in_flight.saturating_add(1);
                levels.bytes_in_flight = levels.bytes_in_flight.saturating_add(len);
                if let Some(tail) = cells.get_mut(flight.tail as usize) {
                    tail.offset = cell;
                } else {
                    flight.head = cell;
                }
                flight.tail = cell;
                let start = (cell as usize).saturating_mul(settings.cell_size);
                let packet = arena.get(start..start.saturating_add(len));
                debug_assert!(packet.is_some(), "every cell lies inside the arena");
                return (dropped, packet.map(|p| (slot.enqueued_at, p)));
            }
            // Empty: off its list; an emptied new queue goes behind the old ones so that a flow
            // that keeps becoming active cannot starve them (RFC 8290, section 4.2).
            let list = if from_new {
                &mut *new_flows
            } else {
                &mut *old_flows
            };
            pop_queue(list, queues);
            let requeue = from_new && old_flows.head != NIL;
            if let Some(queue) = queues.get_mut(q as usize) {
                queue.list = if requeue {
                    Membership::Old
                } else {
                    Membership::Idle
                };
            }
            if requeue {
                push_queue(old_flows, queues, q);
            }
        }
    }

    /// Release the `count` oldest packets in flight; nothing changes if fewer are in flight.
    pub(crate) fn complete(&mut self, count: usize) -> Result<Released, CompleteError> {
        let in_flight = self.levels.packets_in_flight;
        if count > in_flight {
            return Err(CompleteError {
                requested: count,
                in_flight,
            });
        }
        let mut released = Released::default();
        for _ in 0..count {
            let cell = self.flight.head;
            let Some(slot) = self.cells.as_ref().get(cell as usize).copied() else {
                debug_assert!(false, "the flight list holds every packet in flight");
                break;
            };
            self.flight.head = slot.offset;
            released.packets = released.packets.saturating_add(1);
            released.bytes = released.bytes.saturating_add(slot.len as usize);
            self.release_cell(cell);
        }
        if self.flight.head == NIL {
            self.flight.tail = NIL;
        }
        debug_assert_eq!(
            self.flight.head == NIL,
            released.packets == in_flight,
            "the flight list ends exactly with the last packet in flight"
        );
        let levels = &mut self.levels;
        levels.packets_in_flight = levels.packets_in_flight.saturating_sub(released.packets);
        levels.bytes_in_flight = levels.bytes_in_flight.saturating_sub(released.bytes);
        Ok(released)
    }

    /// The packets in flight, oldest first.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        InFlight::linked(
            self.arena.as_ref(),
            self.cells.as_ref(),
            self.flight.head as usize,
            self.levels.packets_in_flight,
            self.settings.cell_size,
        )
    }

    fn cell_start(&self, cell: u32) -> usize {
        (cell as usize).saturating_mul(self.settings.cell_size)
    }

    /// A cell to fill: the most recently freed one, else one never used.
    fn take_cell(&mut self) -> Option<u32> {
        if self.free != NIL {
            let cell = self.free;
            self.free = self
                .cells
                .as_ref()
                .get(cell as usize)
                .map_or(NIL, |s| s.offset);
            return Some(cell);
        }
        if (self.fresh as usize) < self.cells.as_ref().len() {
            let cell = self.fresh;
            self.fresh = self.fresh.saturating_add(1);
            return Some(cell);
        }
        None
    }

    fn release_cell(&mut self, cell: u32) {
        release_cell(self.cells.as_mut(), &mut self.free, cell);
    }

    /// Drop from the head of the queue holding the most packets: half of them, at least one and
    /// at most [`DROP_BATCH`].
    fn drop_from_fattest(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        let fattest = self
            .queues
            .as_ref()
            .iter()
            .enumerate()
            .max_by_key(|(i, q)| (q.packets, core::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let Self {
            cells,
            queues,
            free,
            levels,
            ..
        } = self;
        let Some(queue) = fattest.and_then(|i| queues.as_mut().get_mut(i)) else {
            return dropped;
        };
        let batch = (queue.packets / 2).clamp(1, DROP_BATCH);
        let mut view = QueueView {
            queue,
            cells: cells.as_mut(),
            free,
            levels,
        };
        for _ in 0..batch {
            if let Some(len) = view.drop_head() {
                dropped.add(len);
            }
        }
        dropped
    }
}

impl<B, S, F> fmt::Debug for FlowQueues<B, S, F>
where
    S: AsRef<[Slot]>,
    F: AsRef<[FlowQueue]>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowQueues")
            .field("cells", &self.cells.as_ref().len())
            .field("queues", &self.queues.as_ref().len())
            .field("cell_size", &self.settings.cell_size)
            .field("levels", &self.levels)
            .finish_non_exhaustive()
    }
}

/// One queue as CoDel sees it; dropping its head frees the cell.
struct QueueView<'a> {
    queue: &'a mut FlowQueue,
    cells: &'a mut [Slot],
    free: &'a mut u32,
    levels: &'a mut RingLevels,
}

impl CodelQueue for QueueView<'_> {
    fn head(&self) -> Option<(Instant, usize)> {
        let slot = self.cells.get(self.queue.head as usize)?;
        Some((slot.enqueued_at, slot.len as usize))
    }
    fn packets_queued(&self) -> usize {
        self.queue.packets as usize
    }
    fn bytes_queued(&self) -> usize {
        self.queue.bytes as usize
    }
    fn drop_head(&mut self) -> Option<usize> {
        let (cell, slot) = pop_cell(self.queue, self.cells)?;
        let len = slot.len as usize;
        self.queue.bytes = self.queue.bytes.saturating_sub(slot.len);
        self.levels.packets_queued = self.levels.packets_queued.saturating_sub(1);
        self.levels.bytes_queued = self.levels.bytes_queued.saturating_sub(len);
        release_cell(self.cells, self.free, cell);
        Some(len)
    }
}

/// Put `cell` on top of the free stack.
fn release_cell(cells: &mut [Slot], free: &mut u32, cell: u32) {
    if let Some(slot) = cells.get_mut(cell as usize) {
        slot.offset = *free;
        *free = cell;
    } else {
        debug_assert!(false, "released a cell that does not exist");
    }
}

/// Append `cell` (its link already [`NIL`]) to `queue`.
fn append_cell(queue: &mut FlowQueue, cells: &mut [Slot], cell: u32) {
    match cells.get_mut(queue.tail as usize) {
        Some(tail) => tail.offset = cell,
        None => queue.head = cell,
    }
    queue.tail = cell;
    queue.packets = queue.packets.saturating_add(1);
}

/// Take the head cell off `queue`, unlinked (its byte count is the caller's to adjust).
fn pop_cell(queue: &mut FlowQueue, cells: &mut [Slot]) -> Option<(u32, Slot)> {
    let cell = queue.head;
    let stored = cells.get_mut(cell as usize)?;
    let slot = *stored;
    stored.offset = NIL;
    queue.head = slot.offset;
    if queue.head == NIL {
        queue.tail = NIL;
    }
    queue.packets = queue.packets.saturating_sub(1);
    Some((cell, slot))
}

fn push_queue(list: &mut List, queues: &mut [FlowQueue], q: u32) {
    if let Some(queue) = queues.get_mut(q as usize) {
        queue.next = NIL;
    }
    match queues.get_mut(list.tail as usize) {
        Some(tail) => tail.next = q,
        None => list.head = q,
    }
    list.tail = q;
}

fn pop_queue(list: &mut List, queues: &[FlowQueue]) {
    list.head = queues.get(list.head as usize).map_or(NIL, |q| q.next);
    if list.head == NIL {
        list.tail = NIL;
    }
}

#[cfg(test)]
mod tests;
