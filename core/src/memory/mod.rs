//! The memory governor: a ceiling for the whole process, fed by the platform's headroom.
//!
//! Every engine of tidegate bounds the memory it holds, exactly. The process still dies when the
//! host's own memory (TLS and crypto buffers, DNS caches, relay pools, its runtime) pushes the
//! whole footprint past the platform's limit: jetsam counts the process, not the engines.
//! [`MemoryGovernor`] watches the whole process and turns what it sees into one [`Pressure`]
//! level that the host hands to every engine (`on_pressure`), and it gates the host's own large
//! allocations through reservations it can refuse.
//!
//! ## What it is fed
//!
//! - [`MemoryGovernor::on_headroom`]: the bytes the platform says the process may still
//!   allocate (`os_proc_available_memory()` on iOS). 0 means the platform does not know or does
//!   not limit the process: it is never read as "no room left".
//! - [`MemoryGovernor::on_footprint`]: the process's own footprint, where no headroom call
//!   exists (`phys_footprint` from `task_info` on macOS, the resident set from `/proc` on Linux),
//!   compared with the configured limit. 0 again means unknown.
//!
//! With both known, the larger use counts. Reports are samples: between two of them the host's
//! own allocations are invisible, which is what reservations are for.
//!
//! ## Reservations
//!
//! Before a large allocation (a TLS handshake's buffers, a crypto batch, a relay pool), the host
//! asks [`MemoryGovernor::reserve`] for the bytes, allocates only if granted, and calls
//! [`MemoryGovernor::release`] after freeing them. A refusal is the host's signal to wait for the
//! pressure to fall or to degrade (a smaller batch, one handshake at a time), never to allocate
//! anyway.
//!
//! A reservation counts in the projected use from its grant until the next report, which then
//! measures the allocation itself (so reserve just before allocating, not long before): the
//! projection is the last measured use plus the bytes reserved since. A reservation is granted
//! only if the projection with it stays below the critical threshold, and none is granted while
//! pressure is critical. Releasing one granted since the last report takes it out of the
//! projection at once; one already measured leaves it at the next report, which measures the
//! freed memory.
//!
//! ## Drain contract
//!
//! After any input, call [`MemoryGovernor::poll_pressure`]: it returns the new level once per
//! change, to pass to every engine's `on_pressure`. A level is left only after a calm period, so
//! also arm a timer for [`MemoryGovernor::poll_timeout`] and call
//! [`MemoryGovernor::handle_timeout`] when it passes (or simply keep reporting: every report
//! re-evaluates the level).

mod config;

pub use config::{MemoryConfig, MemoryConfigError, Pressure};

use core::fmt;

use self::config::Thresholds;
use crate::fmt::log_debug;
use crate::time::{Clock, Instant};

/// No slot: the end of the free list.
const NIL: u32 = u32::MAX;

/// Storage for one reservation, handed to the governor at construction: 24 bytes. Build arrays
/// of them with [`ReservationSlot::EMPTY`], one per reservation that may be outstanding at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservationSlot {
    bytes: u64,
    /// The report epoch the reservation was granted in.
    epoch: u64,
    /// Bumped on release, so a stale id is refused; odd while the slot holds a reservation.
    generation: u32,
    /// The next free slot while this one is free.
    next_free: u32,
}

impl ReservationSlot {
    /// A free slot.
    pub const EMPTY: ReservationSlot = ReservationSlot {
        bytes: 0,
        epoch: 0,
        generation: 0,
        next_free: NIL,
    };

    fn in_use(self) -> bool {
        self.generation % 2 == 1
    }
}

impl Default for ReservationSlot {
    fn default() -> Self {
        ReservationSlot::EMPTY
    }
}

/// One granted reservation. [`ReservationId::to_raw`] packs it into a `u64` for C; 0 is never a
/// valid id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReservationId {
    index: u32,
    generation: u32,
}

impl ReservationId {
    /// The id packed into a `u64`: generation in the high 32 bits, slot in the low 32 bits.
    pub const fn to_raw(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// The id packed by [`ReservationId::to_raw`]. Any value is accepted; the governor refuses
    /// ids it did not issue.
    pub const fn from_raw(raw: u64) -> ReservationId {
        ReservationId {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

/// Why [`MemoryGovernor::reserve`] refused. Nothing changed apart from the refusal counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReserveError {
    /// A reservation of 0 bytes.
    Zero,
    /// Granting it would bring the projected use to the critical threshold, or pressure is
    /// critical already: wait for the pressure to fall, or degrade.
    Pressure {
        /// The projected use before the request, in bytes.
        projected: u64,
        /// The critical threshold, in bytes: grants keep the projection below it.
        critical: u64,
    },
    /// Every reservation slot is taken.
    NoSlot,
}

impl core::error::Error for ReserveError {}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::Zero => f.write_str("a reservation of zero bytes"),
            ReserveError::Pressure {
                projected,
                critical,
            } => write!(
                f,
                "memory pressure: {projected} bytes projected, critical at {critical}"
            ),
            ReserveError::NoSlot => f.write_str("every reservation slot is taken"),
        }
    }
}

/// [`MemoryGovernor::release`] was given an id that is not outstanding (already released,
/// forged, or from another governor). Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnknownReservation;

impl core::error::Error for UnknownReservation {}

impl fmt::Display for UnknownReservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no such reservation outstanding")
    }
}

/// A snapshot of the governor. Counters saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemoryStats {
    /// The level in force.
    pub pressure: Pressure,
    /// Projected use: measured use plus the bytes reserved since the last report.
    pub projected_bytes: u64,
    /// Use as last measured (the larger of limit minus headroom and footprint); 0 if unknown.
    pub measured_bytes: u64,
    /// The last headroom reported; 0 if unknown.
    pub headroom_bytes: u64,
    /// Bytes of every outstanding reservation.
    pub reserved_bytes: u64,
    /// Bytes reserved since the last report (part of the projection).
    pub unmeasured_bytes: u64,
    /// Reservations outstanding.
    pub reservations: u32,
    /// The highest projected use seen.
    pub peak_projected_bytes: u64,
    /// Headroom and footprint reports received.
    pub reports: u64,
    /// Reservations granted.
    pub reservations_granted: u64,
    /// Reservations refused for pressure.
    pub reservations_refused: u64,
    /// Bytes of the reservations refused for pressure.
    pub refused_bytes: u64,
    /// Times pressure rose from normal to elevated or critical.
    pub elevated_entries: u64,
    /// Times pressure rose to critical.
    pub critical_entries: u64,
    /// Microseconds spent at elevated pressure, the current stretch included.
    pub elevated_micros: u64,
    /// Microseconds spent at critical pressure, the current stretch included.
    pub critical_micros: u64,
}

/// The memory governor of one process, documented in the `memory` module: pressure levels fed by
/// the platform's headroom, and reservations for the host's own large allocations.
///
/// `S` stores the reservation slots: an array on an embedded target, a boxed slice on a host
/// with an allocator. Not safe for concurrent use (it holds no lock); moving it between threads
/// is fine.
pub struct MemoryGovernor<S> {
    config: MemoryConfig,
    thresholds: Thresholds,
    clock: Clock,
    slots: S,
    /// Top of the free slot stack (last released, first reused).
    free: u32,
    /// Slots never used yet start here (taken in order once the stack is empty).
    fresh: u32,
    headroom: u64,
    footprint: u64,
    /// Counts reports; a reservation granted in the current epoch is not measured yet.
    epoch: u64,
    unmeasured: u64,
    reserved: u64,
    reservations: u32,
    level: Pressure,
    /// The level last handed out by [`MemoryGovernor::poll_pressure`].
    reported: Pressure,
    level_since: Instant,
    /// Since when the level's target has been below the level, while it is.
    calm_since: Option<Instant>,
    stats: MemoryStats,
}

impl<S> MemoryGovernor<S>
where
    S: AsRef<[ReservationSlot]> + AsMut<[ReservationSlot]>,
{
    /// A governor with `config` over `slots` (exactly `config.max_reservations` of them, which
    /// it clears), at normal pressure with nothing measured.
    ///
    /// # Errors
    ///
    /// [`MemoryConfigError`] names what is wrong with `config` or the storage.
    pub fn new(config: MemoryConfig, mut slots: S) -> Result<Self, MemoryConfigError> {
        config.validate()?;
        if slots.as_ref().len() != config.max_reservations as usize {
            return Err(MemoryConfigError::StorageMismatch);
        }
        slots.as_mut().fill(ReservationSlot::EMPTY);
        Ok(MemoryGovernor {
            config,
            thresholds: config.thresholds(),
            clock: Clock::default(),
            slots,
            free: NIL,
            fresh: 0,
            headroom: 0,
            footprint: 0,
            epoch: 0,
            unmeasured: 0,
            reserved: 0,
            reservations: 0,
            level: Pressure::Normal,
            reported: Pressure::Normal,
            level_since: Instant::ZERO,
            calm_since: None,
            stats: MemoryStats::default(),
        })
    }

    /// Bytes of storage a governor with `config` needs: its reservation slots.
    pub const fn footprint(config: &MemoryConfig) -> usize {
        config.max_reservations as usize * core::mem::size_of::<ReservationSlot>()
    }

    /// The configuration the governor was built with.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// The platform reports `available` bytes of headroom (`os_proc_available_memory()`); 0
    /// means unknown. Re-evaluates the level; reservations granted before it count as measured.
    pub fn on_headroom(&mut self, now: Instant, available: u64) {
        self.headroom = available;
        self.measured(now);
    }

    /// The host reports the process's footprint, `bytes` (`phys_footprint`, or the resident set);
    /// 0 means unknown. Re-evaluates the level; reservations granted before it count as measured.
    pub fn on_footprint(&mut self, now: Instant, bytes: u64) {
        self.footprint = bytes;
        self.measured(now);
    }

    /// Reserve `bytes` for an allocation the host is about to make; see the module documentation.
    ///
    /// # Errors
    ///
    /// [`ReserveError`]; a refusal changes nothing but its counters (not even the clock).
    pub fn reserve(&mut self, now: Instant, bytes: u64) -> Result<ReservationId, ReserveError> {
        if bytes == 0 {
            return Err(ReserveError::Zero);
        }
        let projected = self.projected_bytes();
        let critical = self.thresholds.critical_enter;
        if self.level == Pressure::Critical
            || projected
                .checked_add(bytes)
                .is_none_or(|after| after >= critical)
        {
            self.stats.reservations_refused = self.stats.reservations_refused.saturating_add(1);
            self.stats.refused_bytes = self.stats.refused_bytes.saturating_add(bytes);
            return Err(ReserveError::Pressure {
                projected,
                critical,
            });
        }
        let index = self.take_slot().ok_or(ReserveError::NoSlot)?;
        let now = self.clock.observe(now);
        let epoch = self.epoch;
        let Some(slot) = self.slots.as_mut().get_mut(index as usize) else {
            debug_assert!(false, "a taken slot is in the storage");
            return Err(ReserveError::NoSlot);
        };
        slot.generation = slot.generation.wrapping_add(1);
        slot.bytes = bytes;
        slot.epoch = epoch;
        let id = ReservationId {
            index,
            generation: slot.generation,
        };
        // Both sums stay below the critical threshold, a u64: checked above.
        self.unmeasured += bytes;
        self.reserved += bytes;
        self.reservations += 1;
        self.stats.reservations_granted = self.stats.reservations_granted.saturating_add(1);
        self.evaluate(now);
        Ok(id)
    }

    /// Release reservation `id` after freeing its memory; returns its bytes.
    ///
    /// # Errors
    ///
    /// [`UnknownReservation`] if `id` is not outstanding; nothing changes.
    pub fn release(&mut self, now: Instant, id: ReservationId) -> Result<u64, UnknownReservation> {
        let epoch = self.epoch;
        let slot = self
            .slots
            .as_mut()
            .get_mut(id.index as usize)
            .filter(|slot| slot.in_use() && slot.generation == id.generation)
            .ok_or(UnknownReservation)?;
        let bytes = slot.bytes;
        let unmeasured = slot.epoch == epoch;
        slot.generation = slot.generation.wrapping_add(1);
        slot.bytes = 0;
        slot.next_free = self.free;
        self.free = id.index;
        let now = self.clock.observe(now);
        debug_assert!(
            self.reserved >= bytes,
            "the reserved sum holds every reservation"
        );
        self.reserved = self.reserved.saturating_sub(bytes);
        self.reservations = self.reservations.saturating_sub(1);
        if unmeasured {
            debug_assert!(
                self.unmeasured >= bytes,
                "unmeasured bytes are reserved bytes"
            );
            self.unmeasured = self.unmeasured.saturating_sub(bytes);
        }
        self.evaluate(now);
        Ok(bytes)
    }

    /// The level in force.
    pub fn pressure(&self) -> Pressure {
        self.level
    }

    /// The new level, once per change since the last call, or `None`. Pass it to every engine's
    /// `on_pressure`. A change that reverted before this call is not reported.
    #[must_use = "pass the new level to every engine's on_pressure"]
    pub fn poll_pressure(&mut self) -> Option<Pressure> {
        if self.level == self.reported {
            return None;
        }
        self.reported = self.level;
        Some(self.level)
    }

    /// When the current calm period ends and the level may fall, or `None`.
    #[must_use = "arm a timer for this instant"]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calm_since
            .map(|since| since.saturating_add_micros(self.config.calm_micros))
    }

    /// Re-evaluate the level at `now`: a calm period that has passed lowers it. Idempotent.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.evaluate(now);
    }

    /// Projected use: measured use plus the bytes reserved since the last report.
    pub fn projected_bytes(&self) -> u64 {
        self.measured_use().saturating_add(self.unmeasured)
    }

    /// A snapshot of the levels and counters.
    pub fn stats(&self) -> MemoryStats {
        let mut stats = self.stats;
        let stretch = self.clock.latest().micros_since(self.level_since);
        add_time_at(&mut stats, self.level, stretch);
        MemoryStats {
            pressure: self.level,
            projected_bytes: self.projected_bytes(),
            measured_bytes: self.measured_use(),
            headroom_bytes: self.headroom,
            reserved_bytes: self.reserved,
            unmeasured_bytes: self.unmeasured,
            reservations: self.reservations,
            ..stats
        }
    }

    /// A report arrived: every reservation so far is measured now.
    fn measured(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.epoch = self.epoch.wrapping_add(1);
        self.unmeasured = 0;
        self.stats.reports = self.stats.reports.saturating_add(1);
        self.evaluate(now);
    }

    fn measured_use(&self) -> u64 {
        let from_headroom = match self.headroom {
            0 => 0,
            headroom => self.config.limit_bytes.saturating_sub(headroom),
        };
        from_headroom.max(self.footprint)
    }

    /// Move the level towards what the projected use calls for: up at once, down after calm.
    fn evaluate(&mut self, now: Instant) {
        let projected = self.projected_bytes();
        self.stats.peak_projected_bytes = self.stats.peak_projected_bytes.max(projected);
        let target = self.thresholds.target(self.level, projected);
        if target > self.level {
            self.calm_since = None;
            self.set_level(now, target);
        } else if target < self.level {
            let since = *self.calm_since.get_or_insert(now);
            if now.micros_since(since) >= self.config.calm_micros {
                self.calm_since = None;
                self.set_level(now, target);
            }
        } else {
            self.calm_since = None;
        }
    }

    fn set_level(&mut self, now: Instant, level: Pressure) {
        let stretch = now.micros_since(self.level_since);
        add_time_at(&mut self.stats, self.level, stretch);
        if self.level == Pressure::Normal {
            self.stats.elevated_entries = self.stats.elevated_entries.saturating_add(1);
        }
        if level == Pressure::Critical {
            self.stats.critical_entries = self.stats.critical_entries.saturating_add(1);
        }
        log_debug!(
            "memory: pressure {} at {} bytes",
            level,
            self.projected_bytes()
        );
        self.level = level;
        self.level_since = now;
    }

    /// A free slot: the most recently released one, else one never used.
    fn take_slot(&mut self) -> Option<u32> {
        if self.free != NIL {
            let index = self.free;
            self.free = self
                .slots
                .as_ref()
                .get(index as usize)
                .map_or(NIL, |slot| slot.next_free);
            return Some(index);
        }
        if (self.fresh as usize) < self.slots.as_ref().len() {
            let index = self.fresh;
            self.fresh += 1;
            return Some(index);
        }
        None
    }
}

/// Count `micros` spent at `level` in its time counter (normal has none).
fn add_time_at(stats: &mut MemoryStats, level: Pressure, micros: u64) {
    let counter = match level {
        Pressure::Normal => return,
        Pressure::Elevated => &mut stats.elevated_micros,
        Pressure::Critical => &mut stats.critical_micros,
    };
    *counter = counter.saturating_add(micros);
}

impl<S> fmt::Debug for MemoryGovernor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryGovernor")
            .field("config", &self.config)
            .field("pressure", &self.level)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
