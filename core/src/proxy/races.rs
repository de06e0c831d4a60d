//! The proxy engine's race slots: a fixed table of Happy Eyeballs races, a free list, and the
//! queue of races with work for [`ProxyEngine::poll_event`](crate::ProxyEngine::poll_event).
//!
//! A race is queued when it may have an action: an input reached it, one of its timers fell
//! due, its flow stopped being open (it aborts), or budget was released while it waited for
//! some. The queue is threaded through the slots, so queueing never fails and is O(1).

use crate::eyeballs::{DEFAULT_MAX_CANDIDATES, HappyEyeballs};
use crate::flow::FlowId;

/// The race a slot holds: a Happy Eyeballs race over the C ABI's candidate count.
pub(crate) type Race = HappyEyeballs<DEFAULT_MAX_CANDIDATES>;

/// "No slot" in the free list and the ready queue.
const NIL: u32 = u32::MAX;

/// One row of the proxy engine's race table. Hand the engine an array or slice of them, all
/// [`RaceSlot::EMPTY`]; it initialises them itself. The fields are private: the slot is storage
/// the host owns and the engine manages.
#[derive(Clone, Debug)]
pub struct RaceSlot {
    /// The race, while the slot is in use.
    race: Option<Race>,
    /// The flow the race connects (its id when the race started; the flow may have closed).
    flow: FlowId,
    /// Next slot in the free list or the ready queue.
    next: u32,
    /// Whether the slot sits in the ready queue.
    queued: bool,
    /// Whether the race waited for budget when it was last polled.
    waiting: bool,
}

impl RaceSlot {
    /// An unused slot, for initialising storage.
    pub const EMPTY: RaceSlot = RaceSlot {
        race: None,
        flow: FlowId::from_raw(0),
        next: NIL,
        queued: false,
        waiting: false,
    };
}

impl Default for RaceSlot {
    fn default() -> Self {
        RaceSlot::EMPTY
    }
}

/// The race table over caller-handed storage `R`.
#[derive(Debug)]
pub(crate) struct Races<R> {
    slots: R,
    /// Free slots, threaded through `next`.
    free: u32,
    /// The ready queue, threaded through `next`.
    ready_head: u32,
    ready_tail: u32,
    /// Slots in use.
    running: u32,
    /// Slots whose race waited for budget at its last poll.
    waiting: u32,
}

impl<R: AsRef<[RaceSlot]> + AsMut<[RaceSlot]>> Races<R> {
    /// A table over `slots`, all of which it (re)initialises as free. At most `u32::MAX - 1`
    /// slots are used; the engine's constructor refuses more.
    pub(crate) fn new(mut slots: R) -> Self {
        let count = slots.as_ref().len();
        for (index, slot) in slots.as_mut().iter_mut().enumerate() {
            *slot = RaceSlot::EMPTY;
            let next = index.saturating_add(1);
            slot.next = if next < count {
                u32::try_from(next).unwrap_or(NIL)
            } else {
                NIL
            };
        }
        Races {
            free: if count > 0 { 0 } else { NIL },
            slots,
            ready_head: NIL,
            ready_tail: NIL,
            running: 0,
            waiting: 0,
        }
    }

    /// Slots in the table.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    /// Slots in use.
    pub(crate) const fn running(&self) -> u32 {
        self.running
    }

    /// Races that waited for budget at their last poll.
    pub(crate) const fn waiting(&self) -> u32 {
        self.waiting
    }

    /// Put `race` for `flow` in a free slot and queue it; `None` (and `race` dropped) when every
    /// slot is in use.
    pub(crate) fn insert(&mut self, flow: FlowId, race: Race) -> Option<u32> {
        let index = self.free;
        let slot = self.slots.as_mut().get_mut(index as usize)?;
        self.free = slot.next;
        *slot = RaceSlot {
            race: Some(race),
            flow,
            next: NIL,
            queued: false,
            waiting: false,
        };
        self.running = self.running.saturating_add(1);
        self.queue(index);
        Some(index)
    }

    /// The race in slot `index` and the flow it connects, if the slot is in use.
    pub(crate) fn get_mut(&mut self, index: u32) -> Option<(FlowId, &mut Race)> {
        let slot = self.slots.as_mut().get_mut(index as usize)?;
        let flow = slot.flow;
        slot.race.as_mut().map(|race| (flow, race))
    }

    /// The race in slot `index`, if the slot is in use.
    pub(crate) fn get(&self, index: u32) -> Option<&Race> {
        self.slots.as_ref().get(index as usize)?.race.as_ref()
    }

    /// Every race in use, with its slot index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Race)> {
        self.slots
            .as_ref()
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let race = slot.race.as_ref()?;
                Some((u32::try_from(index).ok()?, race))
            })
    }

    /// Queue slot `index` for polling, if it is in use and not already queued. O(1).
    pub(crate) fn queue(&mut self, index: u32) {
        let tail = self.ready_tail;
        let rows = self.slots.as_mut();
        let Some(slot) = rows.get_mut(index as usize) else {
            return;
        };
        if slot.queued || slot.race.is_none() {
            return;
        }
        slot.queued = true;
        slot.next = NIL;
        if slot.waiting {
            slot.waiting = false;
            self.waiting = self.waiting.saturating_sub(1);
        }
        match rows.get_mut(tail as usize) {
            Some(last) => last.next = index,
            None => self.ready_head = index,
        }
        self.ready_tail = index;
    }

    /// The first queued slot, without taking it off the queue.
    pub(crate) const fn peek_ready(&self) -> Option<u32> {
        if self.ready_head == NIL {
            None
        } else {
            Some(self.ready_head)
        }
    }

    /// Take the first queued slot off the queue: its race had no more actions. Free the slot if
    /// the race is finished (returning the flow it connected), or remember that it waits for
    /// budget.
    pub(crate) fn retire_ready(&mut self) -> Option<FlowId> {
        let index = self.peek_ready()?;
        let rows = self.slots.as_mut();
        let slot = rows.get_mut(index as usize)?;
        self.ready_head = slot.next;
        if self.ready_head == NIL {
            self.ready_tail = NIL;
        }
        slot.queued = false;
        slot.next = NIL;
        let flow = slot.flow;
        match &slot.race {
            Some(race) if race.is_finished() => {
                slot.race = None;
                slot.next = self.free;
                self.free = index;
                self.running = self.running.saturating_sub(1);
                Some(flow)
            }
            Some(race) => {
                if race.is_waiting_for_budget() {
                    slot.waiting = true;
                    self.waiting = self.waiting.saturating_add(1);
                }
                None
            }
            None => {
                debug_assert!(false, "only slots in use are queued");
                None
            }
        }
    }

    /// Queue every race that waited for budget. O(slots), run only while some race waits.
    pub(crate) fn wake_waiting(&mut self) {
        if self.waiting == 0 {
            return;
        }
        let count = u32::try_from(self.capacity()).unwrap_or(NIL);
        for index in 0..count {
            if self
                .slots
                .as_ref()
                .get(index as usize)
                .is_some_and(|slot| slot.waiting)
            {
                self.queue(index);
            }
        }
        debug_assert_eq!(self.waiting, 0, "every waiting race was queued");
    }
}
