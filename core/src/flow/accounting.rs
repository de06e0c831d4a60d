//! Per-flow relay accounting, read readiness and the notification drain.
//!
//! Each flow counts, per direction, bytes the host has read and not yet completed: outbound
//! (read from the local flow, not yet acknowledged by the remote send completion) and inbound
//! (read from the remote, not yet completed by `writeData` on the local flow). The governor
//! counts bytes only; it never sees or copies them.
//!
//! Reading a direction pauses when the flow's pending bytes reach the per-flow high watermark,
//! its app's pending bytes (all its flows, both directions) reach the app high watermark, or all
//! pending bytes reach the global high watermark, and resumes below the matching low watermark
//! (hysteresis, so reads do not flap). The app watermark keeps one app whose reader stalls
//! across many flows from pausing every other app's reads at the global watermark. The host
//! learns of a pause by asking `can_read_*` after each read; it learns of the resume from an
//! edge-triggered [`Notification`], queued once per pause.
//!
//! Reads already in flight when a watermark is crossed still land, so pending bytes can exceed
//! a high watermark by at most one read per flow that was allowed to read.

use super::table::{
    Direction, LinkKind, NIL, NOTIFY_RESUME_LOCAL, NOTIFY_RESUME_REMOTE, push_back, unlink,
};
use super::{FlowError, FlowGovernor, FlowId, FlowSlot, FlowState, Notification};
use crate::Instant;
use crate::fmt::log_debug;

/// A relay direction, named by the side the host reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Local flow to remote: bytes read with `readData`, completed by the remote send.
    Outbound,
    /// Remote to local flow: bytes received from the remote, completed by `writeData`.
    Inbound,
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    /// The host read `bytes` from the local flow of `id` (`readData` returned them); they are
    /// pending until [`FlowGovernor::on_remote_sent`]. Then check
    /// [`FlowGovernor::can_read_local`] before issuing the next read.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no flow;
    /// [`FlowError::TooManyBytes`] if the pending counters cannot add `bytes`. Nothing changes
    /// on error.
    pub fn on_local_read(&mut self, now: Instant, id: FlowId, bytes: u64) -> Result<(), FlowError> {
        self.read(now, id, Side::Outbound, bytes)
    }

    /// The remote send completion of `id` acknowledged `bytes` of what was read from the local
    /// flow. May queue [`Notification::ResumeReadLocal`].
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no flow;
    /// [`FlowError::ExceedsPending`] if `bytes` is more than is pending outbound. Nothing
    /// changes on error.
    pub fn on_remote_sent(
        &mut self,
        now: Instant,
        id: FlowId,
        bytes: u64,
    ) -> Result<(), FlowError> {
        self.complete(now, id, Side::Outbound, bytes)
    }

    /// The host received `bytes` from the remote connection of `id`; they are pending until
    /// [`FlowGovernor::on_local_written`]. Then check [`FlowGovernor::can_read_remote`] before
    /// issuing the next receive.
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no flow;
    /// [`FlowError::TooManyBytes`] if the pending counters cannot add `bytes`. Nothing changes
    /// on error.
    pub fn on_remote_read(
        &mut self,
        now: Instant,
        id: FlowId,
        bytes: u64,
    ) -> Result<(), FlowError> {
        self.read(now, id, Side::Inbound, bytes)
    }

    /// The `writeData` completion of `id` handed `bytes` to the local flow's reader. May queue
    /// [`Notification::ResumeReadRemote`].
    ///
    /// # Errors
    ///
    /// [`FlowError::UnknownFlow`] or [`FlowError::StaleFlow`] for an id that names no flow;
    /// [`FlowError::ExceedsPending`] if `bytes` is more than is pending inbound. Nothing
    /// changes on error.
    pub fn on_local_written(
        &mut self,
        now: Instant,
        id: FlowId,
        bytes: u64,
    ) -> Result<(), FlowError> {
        self.complete(now, id, Side::Inbound, bytes)
    }

    /// Whether the host may issue a read on the local flow of `id`: the flow is open, its
    /// outbound bytes are under the per-flow watermark, its app's pending bytes under the app
    /// watermark and all pending bytes under the global one. False for an unknown or stale id.
    /// If a check after a read says no, stop reading until [`Notification::ResumeReadLocal`].
    pub fn can_read_local(&self, id: FlowId) -> bool {
        self.resolve(id)
            .is_ok_and(|index| self.readable(index, Side::Outbound))
    }

    /// Whether the host may issue a receive on the remote connection of `id`: the flow is
    /// established and its inbound bytes, its app's and all pending bytes are under their
    /// watermarks. False for an unknown or stale id. If a check after a read says no, stop
    /// reading until [`Notification::ResumeReadRemote`].
    pub fn can_read_remote(&self, id: FlowId) -> bool {
        self.resolve(id)
            .is_ok_and(|index| self.readable(index, Side::Inbound))
    }

    /// The next notification, or `None` when there is nothing to do. Drain after every input.
    ///
    /// Closes come before resumes of the same flow; each pause yields at most one resume, and a
    /// resume is only reported while the read may really restart.
    #[must_use = "a notification tells the host to resume or close a side"]
    pub fn poll_notification(&mut self) -> Option<Notification> {
        let mut budget = self.slots.as_ref().len().saturating_mul(4);
        while budget > 0 {
            budget -= 1;
            let head = self.notifications.head;
            if head != NIL {
                if let Some(notification) = self.take_notification(head) {
                    return Some(notification);
                }
                continue;
            }
            if self.global_paused {
                return None;
            }
            // The global watermark has cleared: wake the reads that waited for it, one flow at
            // a time, through the notification list.
            let waiting = self.waiting_for_global.head;
            if waiting == NIL {
                return None;
            }
            let rows = self.slots.as_mut();
            unlink(rows, &mut self.waiting_for_global, waiting, LinkKind::Wait);
            if let Some(flow) = self.flow_mut(waiting) {
                flow.in_wait = false;
            }
            for side in [Side::Outbound, Side::Inbound] {
                let paused = self
                    .flow_record(waiting)
                    .is_some_and(|flow| direction(flow, side).paused);
                if paused && self.readable(waiting, side) {
                    self.queue_resume(waiting, side);
                }
            }
        }
        None
    }
}

// Accounting helpers shared with the lifecycle code in `mod.rs`.
impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowGovernor<S> {
    fn read(&mut self, now: Instant, id: FlowId, side: Side, bytes: u64) -> Result<(), FlowError> {
        // A refused read leaves the clock where it was: observed only once nothing can fail.
        let now = self.clock.peek(now);
        let index = self.resolve(id)?;
        if bytes == 0 {
            self.clock.observe(now);
            return Ok(());
        }
        let total = match side {
            Side::Outbound => self.outbound_pending,
            Side::Inbound => self.inbound_pending,
        };
        let high = self.limits.flow_high_watermark;
        let app = self.flow_record(index).ok_or(FlowError::UnknownFlow)?.app;
        let app_pending = self.app(app).map_or(0, |record| record.pending);
        let flow = self.flow_mut(index).ok_or(FlowError::UnknownFlow)?;
        // Refuse, changing nothing, a read the counters cannot hold exactly: a flow's counter,
        // its app's and the reported totals are `u64`, and saturating would make the sums
        // disagree with the flows and the watermarks drift.
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        if direction(flow, side).pending.checked_add(bytes).is_none()
            || app_pending.checked_add(bytes).is_none()
            || total.checked_add(bytes).is_none()
        {
            return Err(FlowError::TooManyBytes { pending: total });
        }
        flow.moved_bytes = true;
        let dir = direction_mut(flow, side);
        let before = dir.pending;
        dir.pending = dir.pending.saturating_add(bytes);
        if dir.pending >= high {
            dir.over = true;
        }
        // Add what the flow's counter really took (it saturates), so the totals stay the exact
        // sum over flows even for absurd counts such as a C host's `(uint64_t)-1`.
        let added = dir.pending.saturating_sub(before);
        if let Some(record) = self.app_mut(app) {
            record.pending = record.pending.saturating_add(added);
        }
        self.update_app(app);
        let added = u128::from(added);
        match side {
            Side::Outbound => self.outbound_pending = self.outbound_pending.saturating_add(added),
            Side::Inbound => self.inbound_pending = self.inbound_pending.saturating_add(added),
        }
        self.update_global();
        self.clock.observe(now);
        self.touch(index, now);
        self.record_pause(index, side);
        Ok(())
    }

    fn complete(
        &mut self,
        now: Instant,
        id: FlowId,
        side: Side,
        bytes: u64,
    ) -> Result<(), FlowError> {
        let now = self.clock.peek(now);
        let index = self.resolve(id)?;
        let low = self.limits.flow_low_watermark;
        let pending = self
            .flow_record(index)
            .map_or(0, |flow| direction(flow, side).pending);
        if bytes > pending {
            return Err(FlowError::ExceedsPending { pending });
        }
        self.clock.observe(now);
        if bytes == 0 {
            return Ok(());
        }
        let flow = self.flow_mut(index).ok_or(FlowError::UnknownFlow)?;
        let dir = direction_mut(flow, side);
        dir.pending -= bytes;
        if dir.pending <= low {
            dir.over = false;
        }
        let app = flow.app;
        let wide = u128::from(bytes);
        match side {
            Side::Outbound => self.outbound_pending = self.outbound_pending.saturating_sub(wide),
            Side::Inbound => self.inbound_pending = self.inbound_pending.saturating_sub(wide),
        }
        self.update_global();
        self.release_app_bytes(app, bytes);
        self.touch(index, now);
        self.maybe_resume(index, side);
        Ok(())
    }

    /// `bytes` pending on a flow of app record `app` completed or were released with the flow:
    /// lower the app's count and, if that clears its watermark, resume its paused reads.
    pub(crate) fn release_app_bytes(&mut self, app: u32, bytes: u64) {
        if let Some(record) = self.app_mut(app) {
            record.pending = record.pending.saturating_sub(bytes);
        }
        if self.update_app(app) {
            self.resume_app(app);
        }
    }

    /// Apply app `app`'s hysteresis after its pending bytes changed; `true` when its reads
    /// were paused and no longer are.
    pub(crate) fn update_app(&mut self, app: u32) -> bool {
        let (high, low) = (
            self.limits.app_high_watermark,
            self.limits.app_low_watermark,
        );
        let Some(record) = self.app_mut(app) else {
            return false;
        };
        if !record.reads_paused && record.pending >= high {
            record.reads_paused = true;
            let pending = record.pending;
            self.apps_paused = self.apps_paused.saturating_add(1);
            self.counters.app_pauses = self.counters.app_pauses.saturating_add(1);
            log_debug!("app high watermark reached: {} bytes pending", pending);
            false
        } else if record.reads_paused && record.pending <= low {
            record.reads_paused = false;
            self.apps_paused = self.apps_paused.saturating_sub(1);
            log_debug!("app low watermark reached");
            true
        } else {
            false
        }
    }

    /// App `app`'s watermark cleared: resume each of its open flows' paused reads that may now
    /// restart (or let them wait for the global watermark). O(open flows of the app), once per
    /// app pause.
    fn resume_app(&mut self, app: u32) {
        let Some(record) = self.app(app) else {
            return;
        };
        for list in [record.busy_flows, record.idle_flows] {
            let mut at = list.head;
            // A list never holds more than the table; the bound only guards against corruption.
            for _ in 0..self.slots.as_ref().len() {
                if at == NIL {
                    break;
                }
                let next = self.flow_record(at).map_or(NIL, |flow| flow.app_link.next);
                self.maybe_resume(at, Side::Outbound);
                self.maybe_resume(at, Side::Inbound);
                at = next;
            }
        }
    }

    /// Whether open flow `index` may read `side` now.
    pub(crate) fn readable(&self, index: u32, side: Side) -> bool {
        let Some(flow) = self.flow_record(index) else {
            return false;
        };
        let state_allows = match side {
            Side::Outbound => flow.state.is_open(),
            Side::Inbound => flow.state == FlowState::Established,
        };
        state_allows
            && !direction(flow, side).over
            && !self.global_paused
            && !self.app(flow.app).is_some_and(|record| record.reads_paused)
    }

    /// After the host checked readiness of `side` (after a read, at admission or connection),
    /// remember whether it was told to stop, and if the global watermark is the obstacle, wait
    /// for it to clear.
    pub(crate) fn record_pause(&mut self, index: u32, side: Side) {
        let readable = self.readable(index, side);
        let global_paused = self.global_paused;
        let Some(flow) = self.flow_mut(index) else {
            return;
        };
        let open = flow.state.is_open();
        direction_mut(flow, side).paused = !readable && open;
        self.update_paused_timer(index);
        if !readable && open && global_paused {
            self.wait_for_global(index);
        }
    }

    /// After bytes of `side` completed on flow `index`, resume a paused read if it may restart,
    /// or wait for the global watermark if only that stands in the way.
    pub(crate) fn maybe_resume(&mut self, index: u32, side: Side) {
        let Some(flow) = self.flow_record(index) else {
            return;
        };
        let dir = direction(flow, side);
        if !dir.paused {
            return;
        }
        if self.readable(index, side) {
            self.queue_resume(index, side);
        } else if self.global_paused && !dir.over && flow.state.is_open() {
            self.wait_for_global(index);
        }
    }

    fn wait_for_global(&mut self, index: u32) {
        let Some(flow) = self.flow_mut(index) else {
            return;
        };
        if flow.in_wait {
            return;
        }
        flow.in_wait = true;
        let rows = self.slots.as_mut();
        push_back(rows, &mut self.waiting_for_global, index, LinkKind::Wait);
    }

    fn queue_resume(&mut self, index: u32, side: Side) {
        let Some(flow) = self.flow_mut(index) else {
            return;
        };
        flow.notify |= match side {
            Side::Outbound => NOTIFY_RESUME_LOCAL,
            Side::Inbound => NOTIFY_RESUME_REMOTE,
        };
        if flow.in_notify {
            return;
        }
        flow.in_notify = true;
        let rows = self.slots.as_mut();
        push_back(rows, &mut self.notifications, index, LinkKind::Notify);
    }

    /// Report one pending notification of flow `index`, or `None` if the flags held nothing
    /// still true; the flow leaves the list once its flags are clear.
    fn take_notification(&mut self, index: u32) -> Option<Notification> {
        let flow = *self.flow_record(index)?;
        let id = FlowId::new(index, flow.generation);
        let mut result = None;
        let mut notify = flow.notify;
        if notify & super::table::NOTIFY_CLOSE != 0 {
            notify &= !super::table::NOTIFY_CLOSE;
            if let Some(reason) = flow.close_reason {
                result = Some(Notification::Close { id, reason });
            }
        } else if notify & NOTIFY_RESUME_LOCAL != 0 {
            notify &= !NOTIFY_RESUME_LOCAL;
            if flow.outbound.paused && self.readable(index, Side::Outbound) {
                result = Some(Notification::ResumeReadLocal { id });
            }
        } else if notify & NOTIFY_RESUME_REMOTE != 0 {
            notify &= !NOTIFY_RESUME_REMOTE;
            if flow.inbound.paused && self.readable(index, Side::Inbound) {
                result = Some(Notification::ResumeReadRemote { id });
            }
        } else {
            notify = 0;
        }
        let flow = self.flow_mut(index)?;
        flow.notify = notify;
        match result {
            Some(Notification::ResumeReadLocal { .. }) => flow.outbound.paused = false,
            Some(Notification::ResumeReadRemote { .. }) => flow.inbound.paused = false,
            _ => {}
        }
        if notify == 0 {
            flow.in_notify = false;
            let rows = self.slots.as_mut();
            unlink(rows, &mut self.notifications, index, LinkKind::Notify);
        }
        if result.is_some() {
            self.update_paused_timer(index);
        }
        result
    }

    /// Apply the global hysteresis after pending bytes changed.
    pub(crate) fn update_global(&mut self) {
        let total = self.outbound_pending.saturating_add(self.inbound_pending);
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        if !self.global_paused && total >= self.limits.global_high_watermark {
            self.global_paused = true;
            log_debug!("global high watermark reached: {} bytes pending", total);
        } else if self.global_paused && total <= self.limits.global_low_watermark {
            self.global_paused = false;
            log_debug!("global low watermark reached: {} bytes pending", total);
        }
    }

    /// Record activity on open flow `index` at `now`: it becomes the most recently active flow
    /// of its app (in the idle or busy list by whether bytes are pending) and, if established,
    /// of the idle timer list.
    pub(crate) fn touch(&mut self, index: u32, now: Instant) {
        let Some(flow) = self.flow_record(index).copied() else {
            return;
        };
        if let Some(record) = self.flow_mut(index) {
            record.last_active = now;
        }
        if !flow.state.is_open() {
            return;
        }
        let busy = flow.pending() > 0;
        let rows = self.slots.as_mut();
        if let Some(app) = rows.get(flow.app as usize).map(|row| row.app) {
            let mut from = if flow.in_busy {
                app.busy_flows
            } else {
                app.idle_flows
            };
            unlink(rows, &mut from, index, LinkKind::App);
            let mut to = if flow.in_busy == busy {
                from
            } else if busy {
                app.busy_flows
            } else {
                app.idle_flows
            };
            push_back(rows, &mut to, index, LinkKind::App);
            if let Some(row) = rows.get_mut(flow.app as usize) {
                let (from_list, to_list) = if flow.in_busy {
                    (&mut row.app.busy_flows, &mut row.app.idle_flows)
                } else {
                    (&mut row.app.idle_flows, &mut row.app.busy_flows)
                };
                if flow.in_busy == busy {
                    *from_list = to;
                } else {
                    *from_list = from;
                    *to_list = to;
                }
            }
        }
        if flow.state == FlowState::Established {
            self.move_to_idle_tail(index, flow.class);
        }
        if let Some(record) = self.flow_mut(index) {
            record.in_busy = busy;
        }
    }
}

fn direction(flow: &super::table::FlowRecord, side: Side) -> Direction {
    match side {
        Side::Outbound => flow.outbound,
        Side::Inbound => flow.inbound,
    }
}

fn direction_mut(flow: &mut super::table::FlowRecord, side: Side) -> &mut Direction {
    match side {
        Side::Outbound => &mut flow.outbound,
        Side::Inbound => &mut flow.inbound,
    }
}
