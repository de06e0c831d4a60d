//! `PacketRing`: a fixed-capacity FIFO of variable-length packets. The design is documented on
//! the type, where rustdoc shows it.

use core::fmt;

use crate::time::Instant;

/// Bit of [`Slot::len`] marking a packet dropped while packets before it were still in flight.
const DROPPED: u32 = 1 << 31;

/// The largest arena a ring accepts: offsets and lengths are stored in 31 bits.
pub const MAX_ARENA_BYTES: usize = (DROPPED - 1) as usize;

/// The packet alignment [`PacketRing::new`] uses: a cache line on the CPUs tidegate targets.
pub const DEFAULT_PACKET_ALIGN: usize = 64;

/// The largest packet alignment a ring accepts: a 4 KiB page.
pub const MAX_PACKET_ALIGN: usize = 4096;

/// The descriptor of one packet in a [`PacketRing`]: 16 bytes.
///
/// Hosts only create storage for these: `[Slot::EMPTY; N]` on an embedded target, or a boxed
/// slice on a host with an allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Where the packet starts in the arena. In flow-queue mode, where a cell's place in the arena
    /// follows from its index, the index of the next cell on the same list instead.
    pub(crate) offset: u32,
    pub(crate) len: u32,
    pub(crate) enqueued_at: Instant,
}

impl Slot {
    /// An unused descriptor, to fill slot storage with.
    pub const EMPTY: Slot = Slot {
        offset: 0,
        len: 0,
        enqueued_at: Instant::ZERO,
    };

    fn payload_len(self) -> usize {
        (self.len & !DROPPED) as usize
    }

    fn is_dropped(self) -> bool {
        self.len & DROPPED != 0
    }

    fn range(self) -> core::ops::Range<usize> {
        let start = self.offset as usize;
        start..start.saturating_add(self.payload_len())
    }
}

impl Default for Slot {
    fn default() -> Self {
        Slot::EMPTY
    }
}

/// Why [`PacketRing::new`] refused its storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RingError {
    /// The byte arena or the slot storage is empty.
    ZeroCapacity,
    /// The byte arena is larger than [`MAX_ARENA_BYTES`].
    ArenaTooLarge {
        /// The arena length that was handed in.
        bytes: usize,
    },
    /// The packet alignment is not a power of two no larger than [`MAX_PACKET_ALIGN`].
    BadPacketAlign {
        /// The alignment that was asked for.
        align: usize,
    },
}

impl core::error::Error for RingError {}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::ZeroCapacity => f.write_str("ring storage has zero capacity"),
            RingError::ArenaTooLarge { bytes } => {
                write!(
                    f,
                    "ring arena of {bytes} bytes exceeds the maximum of {MAX_ARENA_BYTES}"
                )
            }
            RingError::BadPacketAlign { align } => write!(
                f,
                "packet alignment {align} is not a power of two up to {MAX_PACKET_ALIGN}"
            ),
        }
    }
}

/// Why [`PacketRing::push`] refused a packet. The ring is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PushError {
    /// The packet has no bytes; a ring never stores empty packets.
    Empty,
    /// There is no contiguous room for the packet, or no free slot, right now.
    Full,
}

impl core::error::Error for PushError {}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushError::Empty => "packet is empty",
            PushError::Full => "ring has no room for the packet",
        })
    }
}

/// [`PacketRing::complete`] was asked to complete more packets than are in flight. The ring is
/// unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CompleteError {
    /// How many completions the call asked for.
    pub requested: usize,
    /// How many packets were in flight.
    pub in_flight: usize,
}

impl core::error::Error for CompleteError {}

impl fmt::Display for CompleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot complete {} packets: only {} in flight",
            self.requested, self.in_flight
        )
    }
}

/// Packets and bytes released by one [`PacketRing::complete`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Released {
    /// Packets completed.
    pub packets: usize,
    /// Payload bytes of those packets.
    pub bytes: usize,
}

/// A snapshot of what a ring holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RingLevels {
    /// Packets waiting to be handed out.
    pub packets_queued: usize,
    /// Payload bytes waiting to be handed out.
    pub bytes_queued: usize,
    /// Packets handed out and not yet completed.
    pub packets_in_flight: usize,
    /// Payload bytes handed out and not yet completed.
    pub bytes_in_flight: usize,
    /// Payload bytes of dropped packets that still occupy the arena because packets before them
    /// are in flight; reclaimed when those complete.
    pub bytes_dropped_pending: usize,
}

impl RingLevels {
    /// Payload bytes in the arena: queued, in flight and dropped-pending. The arena bytes those
    /// packets take, alignment padding included, are [`PacketRing::bytes_used`].
    pub fn payload_bytes(&self) -> usize {
        self.bytes_queued
            .saturating_add(self.bytes_in_flight)
            .saturating_add(self.bytes_dropped_pending)
    }
}

/// A fixed-capacity FIFO of variable-length, contiguous packets.
///
/// The ring owns two pieces of storage handed in by the host and never grows them:
///
/// - a byte **arena** holding the packets back to back. Each packet is one contiguous slice, so
///   the host can pass it to the OS without a copy. A packet that does not fit between the newest
///   packet and the end of the arena starts again at offset 0 (the gap left at the end is reused
///   once the ring wraps past it), as in a bip buffer;
/// - a ring of [`Slot`] descriptors (offset, length, enqueue time), one per packet, which bounds
///   the packet count and lets the arena and the count have any size, not only powers of two.
///
/// A packet moves through three stages, always in FIFO order: **queued** after
/// [`PacketRing::push`], **in flight** after [`PacketRing::handout`] (its bytes stay where they
/// are and stay counted while the host sends them), and released by [`PacketRing::complete`].
/// A queued packet can also be dropped from the front ([`PacketRing::drop_queued_front`]); if
/// packets handed out earlier still sit before it in the arena, its bytes are reclaimed when
/// those complete, and until then they are reported as [`RingLevels::bytes_dropped_pending`].
///
/// Every operation is O(1) (completing `n` packets is O(n)), and nothing here allocates.
///
/// ## Alignment
///
/// Each packet starts at a memory address that is a multiple of the ring's packet alignment
/// ([`DEFAULT_PACKET_ALIGN`], a cache line, unless [`PacketRing::with_packet_align`] picks
/// another), whenever the padding fits; where it does not, the packet starts right after the
/// previous one instead, so a packet is never refused for want of room for its padding, and the
/// fit guarantee below holds as stated. At consecutive unaligned offsets a 1500-byte packet
/// straddles one cache line more on each side, and copying it in and out costs measurably more
/// (the ring benchmark's "tidegate, packed" row). The padding costs at most `align - 1` arena bytes per packet and is counted in
/// [`PacketRing::bytes_used`].
///
/// The ring aligns addresses, not offsets, so any arena benefits. Where packets sit, and so
/// `bytes_used`, then depends on the arena's address too (an empty ring places its first packet
/// at the first aligned address); hand in an arena that starts on an `align` boundary, as the C
/// library does, for a layout that depends on the packets alone. The address is read where each
/// packet is placed, so an arena that moves with the ring stays correct; packets placed before
/// the move are merely not aligned.
///
/// ## Capacity
///
/// The arena is the exact memory ceiling. Because packets are contiguous, a packet of `len`
/// bytes is guaranteed to fit (given a free slot) while
/// `bytes_used() + len + max(len, largest) <= byte_capacity()`, where `bytes_used()` counts the
/// alignment padding and `largest` is the longest packet pushed since the ring was last empty
/// (0 for an empty ring). The `max` matters: a packet longer than every one before it may find
/// no gap of its size at either end of the arena with less spare room than twice its length.
/// Between that bound and the full arena a packet fits as the layout allows;
/// [`PacketRing::fits`] answers exactly. So any packet of at most `max_packet_len` bytes fits
/// while `bytes_used() + 2 * max_packet_len <= byte_capacity()`, which is what the tunnel's
/// headroom above its high watermark relies on.
///
/// `B` is the byte arena and `S` the slot storage: arrays (`[u8; 8192]`, `[Slot; 64]`),
/// `&'static mut` slices, or boxed slices on a host with an allocator.
pub struct PacketRing<B, S> {
    arena: B,
    slots: S,
    /// Slot index of the oldest live packet (in flight, dropped-pending or queued).
    first: usize,
    /// Live slots, in flight (including dropped-pending) then queued.
    live: usize,
    /// The oldest `handed` live slots have been handed out or dropped behind in-flight packets.
    handed: usize,
    /// Arena offset of the oldest live packet (the `first` slot's offset, kept here so that
    /// placing a packet and measuring the ring read no slot); meaningful only while `live > 0`.
    head: usize,
    /// Arena offset just past the newest packet; meaningful only while `live > 0`.
    tail: usize,
    /// Arena offset just past the newest packet placed before the layout last wrapped to the
    /// start of the arena; meaningful only while the live packets wrap (`head >= tail`).
    wrap_end: usize,
    /// Where the free room after the newest packet ends: the end of the arena, or `head` while
    /// the live packets wrap. Kept up to date where the layout changes, so that placing a packet
    /// reads one field instead of working it out.
    room_end: usize,
    /// Packet start addresses are multiples of this power of two when the padding fits.
    align: usize,
    /// Of the `handed` slots, those dropped behind in-flight packets.
    dropped_pending: usize,
    bytes_queued: usize,
    bytes_in_flight: usize,
    bytes_dropped_pending: usize,
}

impl<B, S> PacketRing<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[Slot]> + AsMut<[Slot]>,
{
    /// A ring over `arena` (the byte ceiling) and `slots` (the packet-count ceiling), starting
    /// packets on [`DEFAULT_PACKET_ALIGN`]-byte boundaries.
    pub fn new(arena: B, slots: S) -> Result<Self, RingError> {
        Self::with_packet_align(arena, slots, DEFAULT_PACKET_ALIGN)
    }

    /// A ring like [`PacketRing::new`] that starts packets on `align`-byte boundaries: a power
    /// of two up to [`MAX_PACKET_ALIGN`]. `1` packs packets back to back (the densest layout,
    /// for small arenas on cacheless microcontrollers); see the type's "Alignment" section.
    pub fn with_packet_align(arena: B, slots: S, align: usize) -> Result<Self, RingError> {
        let bytes = arena.as_ref().len();
        if bytes == 0 || slots.as_ref().is_empty() {
            return Err(RingError::ZeroCapacity);
        }
        if bytes > MAX_ARENA_BYTES {
            return Err(RingError::ArenaTooLarge { bytes });
        }
        if !align.is_power_of_two() || align > MAX_PACKET_ALIGN {
            return Err(RingError::BadPacketAlign { align });
        }
        Ok(PacketRing {
            arena,
            slots,
            first: 0,
            live: 0,
            handed: 0,
            head: 0,
            tail: 0,
            wrap_end: 0,
            room_end: bytes,
            align,
            dropped_pending: 0,
            bytes_queued: 0,
            bytes_in_flight: 0,
            bytes_dropped_pending: 0,
        })
    }

    /// The packet alignment the ring was built with.
    pub fn packet_align(&self) -> usize {
        self.align
    }

    /// Size of the byte arena: the most payload bytes the ring can ever hold.
    pub fn byte_capacity(&self) -> usize {
        self.arena.as_ref().len()
    }

    /// Number of slots: the most packets the ring can ever hold.
    pub fn packet_capacity(&self) -> usize {
        self.slots.as_ref().len()
    }

    /// What the ring holds now.
    pub fn levels(&self) -> RingLevels {
        RingLevels {
            packets_queued: self.packets_queued(),
            bytes_queued: self.bytes_queued,
            packets_in_flight: self.packets_in_flight(),
            bytes_in_flight: self.bytes_in_flight,
            bytes_dropped_pending: self.bytes_dropped_pending,
        }
    }

    /// Packets queued or in flight: what the ring holds for the host, dropped-pending slots
    /// aside.
    pub fn packets_held(&self) -> usize {
        self.live - self.dropped_pending
    }

    /// Slots in use: packets queued, in flight, and dropped but not yet reclaimed (see
    /// [`PacketRing::drop_queued_front`]). A push needs a free slot, so this, not the packet
    /// levels alone, is what bounds the packet count.
    pub fn slots_used(&self) -> usize {
        self.live
    }

    /// Arena bytes taken: the payload of every live packet (queued, in flight and
    /// dropped-pending) plus the alignment padding in front of each. This is what the fit
    /// guarantee and the tunnel's watermarks measure; it never exceeds
    /// [`PacketRing::byte_capacity`], and exceeds [`RingLevels::payload_bytes`] by at most
    /// `packet_align() - 1` per live packet.
    #[inline]
    pub fn bytes_used(&self) -> usize {
        if self.live == 0 {
            0
        } else if self.head < self.tail {
            self.tail - self.head
        } else {
            // Wrapped: [head, wrap_end) and [0, tail); the gap after wrap_end is free.
            self.wrap_end - self.head + self.tail
        }
    }

    /// Whether nothing is queued (packets may still be in flight).
    pub fn is_queue_empty(&self) -> bool {
        self.live == self.handed
    }

    /// Whether a packet of `len` bytes would be accepted by [`PacketRing::push`] right now.
    pub fn fits(&self, len: usize) -> bool {
        len != 0 && self.place(len).is_some()
    }

    /// Queue a copy of `packet`, stamped with `now` (used for sojourn time).
    #[inline]
    pub fn push(&mut self, now: Instant, packet: &[u8]) -> Result<(), PushError> {
        self.push_with(now, packet.len(), |dst| dst.copy_from_slice(packet))
    }

    /// Queue a packet of `len` bytes written in place by `write`, which receives exactly `len`
    /// bytes of arena to fill. Use it to gather a packet from several buffers with one copy.
    ///
    /// If `write` panics, the ring is left as it was: the packet is not queued.
    #[inline]
    pub fn push_with(
        &mut self,
        now: Instant,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), PushError> {
        if len == 0 {
            return Err(PushError::Empty);
        }
        let offset = self.place(len).ok_or(PushError::Full)?;
        // `place` bounds `offset + len` by the arena, which is at most `MAX_ARENA_BYTES`.
        let end = offset + len;
        let slot_index = self.slot_index(self.live);
        let (Some(dst), Some(slot)) = (
            self.arena.as_mut().get_mut(offset..end),
            self.slots.as_mut().get_mut(slot_index),
        ) else {
            return Err(PushError::Full);
        };
        // The copy comes first: a `write` that panics leaves the ring as it was.
        write(dst);
        *slot = Slot {
            offset: offset as u32,
            len: len as u32,
            enqueued_at: now,
        };
        if self.live == 0 {
            self.head = offset;
        } else if offset < self.tail {
            // Placed before the tail: the layout wraps, and the bytes after the old tail are
            // a gap until the ring wraps past it.
            self.wrap_end = self.tail;
            self.room_end = self.head;
        }
        self.tail = end;
        // Levels are bounded by the slot count and the arena (at most `MAX_ARENA_BYTES`), so
        // plain arithmetic cannot overflow; debug builds check it anyway.
        self.live += 1;
        self.bytes_queued += len;
        Ok(())
    }

    /// When the oldest queued packet was pushed, or `None` if nothing is queued.
    pub fn queued_front_enqueued_at(&self) -> Option<Instant> {
        self.queued_front().map(|slot| slot.enqueued_at)
    }

    /// Length of the oldest queued packet, or `None` if nothing is queued.
    pub fn queued_front_len(&self) -> Option<usize> {
        self.queued_front().map(Slot::payload_len)
    }

    /// Hand out the oldest queued packet: it moves to in flight and its bytes stay in place and
    /// counted until [`PacketRing::complete`] releases it.
    #[inline]
    pub fn handout(&mut self) -> Option<&[u8]> {
        self.handout_stamped().map(|(_, packet)| packet)
    }

    /// [`PacketRing::handout`], also returning when the packet was pushed, from the same slot
    /// read (the tunnel's sojourn time needs both).
    #[inline]
    pub fn handout_stamped(&mut self) -> Option<(Instant, &[u8])> {
        let slot = self.queued_front()?;
        // A queued slot is never dropped: only `drop_queued_front` marks one, as it hands it.
        debug_assert!(!slot.is_dropped(), "a queued slot is not marked dropped");
        let len = slot.len as usize;
        let start = slot.offset as usize;
        let packet = self.arena.as_ref().get(start..start + len)?;
        self.handed += 1;
        self.bytes_queued -= len;
        self.bytes_in_flight += len;
        Some((slot.enqueued_at, packet))
    }

    /// Hand out up to `max` queued packets, oldest first, passing each to `each`; returns how
    /// many, and when the last of them was pushed. The same as [`PacketRing::handout_stamped`]
    /// `max` times or until nothing is queued, with the levels updated once.
    #[inline]
    pub fn handout_batch(
        &mut self,
        max: usize,
        mut each: impl FnMut(&[u8]),
    ) -> (usize, Option<Instant>) {
        let count = self.packets_queued().min(max);
        let (arena, slots) = (self.arena.as_ref(), self.slots.as_ref());
        let mut index = self.slot_index(self.handed);
        let (mut handed, mut bytes, mut last) = (0, 0, None);
        while handed < count {
            let Some(&slot) = slots.get(index) else {
                debug_assert!(false, "a queued slot is in the slot storage");
                break;
            };
            // A queued slot is never dropped: only `drop_queued_front` marks one, as it hands it.
            debug_assert!(!slot.is_dropped(), "a queued slot is not marked dropped");
            let (start, len) = (slot.offset as usize, slot.len as usize);
            let Some(packet) = arena.get(start..start + len) else {
                debug_assert!(false, "a queued packet lies in the arena");
                break;
            };
            each(packet);
            bytes += len;
            last = Some(slot.enqueued_at);
            handed += 1;
            index = wrap_index(index, 1, slots.len());
        }
        self.handed += handed;
        self.bytes_queued -= bytes;
        self.bytes_in_flight += bytes;
        (handed, last)
    }

    /// Drop the oldest queued packet and return its length, or `None` if nothing is queued.
    ///
    /// If no packet is in flight its bytes are free at once; otherwise they are reclaimed when
    /// the packets handed out before it complete.
    pub fn drop_queued_front(&mut self) -> Option<usize> {
        let slot = self.queued_front()?;
        let len = slot.payload_len();
        self.bytes_queued -= len;
        if self.handed == 0 {
            self.release_front(1);
        } else {
            let index = self.slot_index(self.handed);
            if let Some(stored) = self.slots.as_mut().get_mut(index) {
                stored.len |= DROPPED;
            }
            self.handed += 1;
            self.dropped_pending += 1;
            self.bytes_dropped_pending += len;
        }
        Some(len)
    }

    /// Release the `count` oldest in-flight packets, in order.
    ///
    /// Fails without changing anything if fewer than `count` packets are in flight.
    pub fn complete(&mut self, count: usize) -> Result<Released, CompleteError> {
        let in_flight = self.packets_in_flight();
        if count > in_flight {
            return Err(CompleteError {
                requested: count,
                in_flight,
            });
        }
        if count == in_flight && self.dropped_pending == 0 {
            // The batch pattern: everything handed out completes and no dropped packet sits
            // among it, so the released bytes are the in-flight bytes and no slot is visited.
            let released = Released {
                packets: count,
                bytes: self.bytes_in_flight,
            };
            self.release_front(self.handed);
            self.handed = 0;
            self.bytes_in_flight = 0;
            return Ok(released);
        }
        let mut released = Released::default();
        while self.handed > 0 {
            let Some(slot) = self.slot(self.first) else {
                break;
            };
            if !slot.is_dropped() {
                if released.packets == count {
                    break;
                }
                released.packets += 1;
                released.bytes += slot.payload_len();
            } else {
                self.dropped_pending -= 1;
                self.bytes_dropped_pending -= slot.payload_len();
            }
            self.handed -= 1;
            self.release_front(1);
        }
        self.bytes_in_flight -= released.bytes;
        Ok(released)
    }

    /// The packets in flight, oldest first: the ones [`PacketRing::handout`] returned and
    /// [`PacketRing::complete`] has not released yet.
    pub fn in_flight(&self) -> InFlight<'_> {
        InFlight {
            arena: self.arena.as_ref(),
            slots: self.slots.as_ref(),
            next: self.first,
            remaining: self.handed,
            cell_stride: 0,
        }
    }

    /// The slot index `steps` after the oldest live slot, wrapping at the slot capacity.
    fn slot_index(&self, steps: usize) -> usize {
        wrap_index(self.first, steps, self.packet_capacity())
    }

    fn slot(&self, index: usize) -> Option<Slot> {
        self.slots.as_ref().get(index).copied()
    }

    fn queued_front(&self) -> Option<Slot> {
        if self.live == self.handed {
            return None;
        }
        self.slot(self.slot_index(self.handed))
    }

    fn packets_queued(&self) -> usize {
        self.live - self.handed
    }

    fn packets_in_flight(&self) -> usize {
        self.handed - self.dropped_pending
    }

    /// Where a packet of `len` bytes would start, if it fits now.
    #[inline]
    fn place(&self, len: usize) -> Option<usize> {
        if self.live >= self.packet_capacity() {
            return None;
        }
        // The free room after the newest packet (from 0 in an empty ring): the rest of the
        // arena, or, once the live packets wrap ([head, wrap_end) and [0, tail)), the gap up to
        // the oldest one.
        let (from, to) = (self.tail, self.room_end);
        debug_assert!(
            from <= to,
            "the tail is never past the end of its free room"
        );
        // The common case: aligned, right there. `from <= to <= MAX_ARENA_BYTES` and the padding
        // is below `MAX_PACKET_ALIGN`, so the sum cannot overflow.
        let aligned = from + self.padding_at(from);
        if aligned <= to && len <= to - aligned {
            return Some(aligned);
        }
        self.place_unaligned_or_wrapped(len, from, to)
    }

    /// [`PacketRing::place`] when the packet does not fit aligned after the newest one: there
    /// unaligned, or else at the start of the arena if the live packets do not wrap yet.
    #[cold]
    fn place_unaligned_or_wrapped(&self, len: usize, from: usize, to: usize) -> Option<usize> {
        if len <= to - from {
            return Some(from);
        }
        if self.live > 0 && self.head < self.tail {
            // Live bytes are [head, tail): the room before head, at the start of the arena.
            let aligned = self.padding_at(0);
            if aligned <= self.head && len <= self.head - aligned {
                return Some(aligned);
            }
            if len <= self.head {
                return Some(0);
            }
        }
        None
    }

    /// The padding that brings arena offset `from` to an aligned address (`align` is a power of
    /// two).
    #[inline]
    fn padding_at(&self, from: usize) -> usize {
        let base = self.arena.as_ref().as_ptr().addr();
        base.wrapping_add(from).wrapping_neg() & (self.align - 1)
    }

    /// Forget the `count` oldest live slots (at most `live`); their arena bytes become free.
    fn release_front(&mut self, count: usize) {
        self.live -= count;
        if self.live == 0 {
            // Empty: restart at offset 0 so the whole arena is one contiguous region again.
            self.first = 0;
            self.tail = 0;
            self.room_end = self.byte_capacity();
            return;
        }
        self.first = self.slot_index(count);
        let head = self.slot(self.first).map(|slot| slot.offset as usize);
        debug_assert!(head.is_some(), "the first live slot is in the slot storage");
        self.head = head.unwrap_or(0);
        self.room_end = if self.head < self.tail {
            self.byte_capacity()
        } else {
            self.head
        };
    }
}

impl<B, S> fmt::Debug for PacketRing<B, S>
where
    B: AsRef<[u8]>,
    S: AsRef<[Slot]>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketRing")
            .field("byte_capacity", &self.arena.as_ref().len())
            .field("packet_capacity", &self.slots.as_ref().len())
            .field("live", &self.live)
            .field("handed", &self.handed)
            .field("bytes_queued", &self.bytes_queued)
            .field("bytes_in_flight", &self.bytes_in_flight)
            .finish_non_exhaustive()
    }
}

/// Iterator over the packets in flight, oldest first. See [`PacketRing::in_flight`].
#[derive(Clone, Debug)]
pub struct InFlight<'a> {
    arena: &'a [u8],
    slots: &'a [Slot],
    next: usize,
    remaining: usize,
    /// 0 for a ring, whose slots follow each other; else the cell size of flow queues, whose
    /// in-flight cells are a list linked through [`Slot::offset`].
    cell_stride: usize,
}

impl<'a> InFlight<'a> {
    /// The `count` in-flight cells of flow queues, linked from `head`.
    pub(crate) fn linked(
        arena: &'a [u8],
        cells: &'a [Slot],
        head: usize,
        count: usize,
        cell_stride: usize,
    ) -> Self {
        InFlight {
            arena,
            slots: cells,
            next: head,
            remaining: count,
            cell_stride,
        }
    }
}

impl<'a> Iterator for InFlight<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.cell_stride != 0 {
            if self.remaining == 0 {
                return None;
            }
            let cell = *self.slots.get(self.next)?;
            let start = self.next.checked_mul(self.cell_stride)?;
            self.next = cell.offset as usize;
            self.remaining = self.remaining.saturating_sub(1);
            return self.arena.get(start..start.checked_add(cell.len as usize)?);
        }
        while self.remaining > 0 {
            let slot = *self.slots.get(self.next)?;
            self.next = wrap_index(self.next, 1, self.slots.len());
            self.remaining = self.remaining.saturating_sub(1);
            if !slot.is_dropped() {
                return self.arena.get(slot.range());
            }
        }
        None
    }
}

/// `(start + steps) % capacity` for `start < capacity` and `steps <= capacity`, without a
/// division on the hot path. Slot counts are slice lengths, so the sum cannot overflow.
#[inline]
fn wrap_index(start: usize, steps: usize, capacity: usize) -> usize {
    let index = start + steps;
    if index >= capacity {
        index - capacity
    } else {
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    type TestRing = PacketRing<Vec<u8>, Vec<Slot>>;

    /// A packed ring (alignment 1), so layouts and byte levels are exact sums of lengths.
    fn ring(bytes: usize, slots: usize) -> TestRing {
        aligned_ring(bytes, slots, 1)
    }

    fn aligned_ring(bytes: usize, slots: usize, align: usize) -> TestRing {
        PacketRing::with_packet_align(vec![0; bytes], vec![Slot::EMPTY; slots], align).unwrap()
    }

    /// Where `packet` sits relative to an `align` boundary.
    fn misalignment(packet: &[u8], align: usize) -> usize {
        packet.as_ptr().addr() % align
    }

    fn t(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    #[test]
    fn rejects_zero_capacity_and_empty_packets() {
        assert_eq!(
            PacketRing::new([0u8; 0], [Slot::EMPTY; 1]).unwrap_err(),
            RingError::ZeroCapacity
        );
        assert_eq!(
            PacketRing::new([0u8; 4], [Slot::EMPTY; 0]).unwrap_err(),
            RingError::ZeroCapacity
        );
        let mut r = ring(16, 2);
        assert_eq!(r.push(t(0), &[]), Err(PushError::Empty));
        assert_eq!(r.levels(), RingLevels::default());
    }

    #[test]
    fn packet_alignment_must_be_a_power_of_two_up_to_a_page() {
        for align in [0, 3, 48, 8192] {
            assert_eq!(
                PacketRing::with_packet_align([0u8; 8], [Slot::EMPTY; 1], align).unwrap_err(),
                RingError::BadPacketAlign { align }
            );
        }
        for align in [1, 2, 64, MAX_PACKET_ALIGN] {
            let r = PacketRing::with_packet_align([0u8; 8], [Slot::EMPTY; 1], align).unwrap();
            assert_eq!(r.packet_align(), align);
        }
        let r = PacketRing::new([0u8; 8], [Slot::EMPTY; 1]).unwrap();
        assert_eq!(r.packet_align(), DEFAULT_PACKET_ALIGN);
    }

    #[test]
    fn packets_start_on_aligned_addresses_and_the_padding_is_counted() {
        // An aligned arena, so the layout (and where padding would not fit) is the same on
        // every run.
        let mut backing = vec![0u8; 64 * 1024 + 128];
        let arena = arena_at(&mut backing, 0, 64 * 1024);
        let mut r = PacketRing::with_packet_align(arena, vec![Slot::EMPTY; 64], 64).unwrap();
        for round in 0..50usize {
            let lens = [1500, 40, 576, 1, 1400 + round];
            for (i, len) in lens.iter().cycle().take(32).enumerate() {
                r.push(t(0), &vec![i as u8; *len]).unwrap();
            }
            let payload = r.levels().payload_bytes();
            let used = r.bytes_used();
            assert!(
                payload <= used && used <= payload + 32 * 63,
                "padding is counted, at most 63 bytes a packet: {payload} <= {used}"
            );
            // Hand out half, complete them, so later rounds start mid-arena and wrap.
            for _ in 0..16 + round % 16 {
                let packet = r.handout().unwrap();
                assert_eq!(misalignment(packet, 64), 0, "round {round}");
            }
            r.complete(r.levels().packets_in_flight).unwrap();
            while let Some(packet) = r.handout() {
                assert_eq!(misalignment(packet, 64), 0, "round {round}");
            }
            r.complete(r.levels().packets_in_flight).unwrap();
            assert_eq!(r.bytes_used(), 0);
        }
    }

    /// `len` bytes of `backing` that start `skew` bytes past a 64-byte boundary.
    fn arena_at(backing: &mut [u8], skew: usize, len: usize) -> &mut [u8] {
        let start = backing.as_ptr().align_offset(64) + skew;
        &mut backing[start..start + len]
    }

    /// A 4-slot ring aligning packets to 64 bytes over `len` bytes of `backing` that start
    /// `skew` bytes past a 64-byte boundary, and the arena's address.
    fn ring_at(
        backing: &mut [u8],
        skew: usize,
        len: usize,
    ) -> (PacketRing<&mut [u8], Vec<Slot>>, usize) {
        let arena = arena_at(backing, skew, len);
        let base = arena.as_ptr().addr();
        let ring = PacketRing::with_packet_align(arena, vec![Slot::EMPTY; 4], 64).unwrap();
        (ring, base)
    }

    #[test]
    fn a_packet_without_room_for_its_padding_is_packed_instead_of_refused() {
        let mut backing = vec![0u8; 100 + 128];
        let (mut r, base) = ring_at(&mut backing, 0, 100);
        // [0, 40), then 64 + 40 would pass the end, so the second packet starts at 40.
        r.push(t(0), &[1; 40]).unwrap();
        assert!(r.fits(40));
        r.push(t(0), &[2; 40]).unwrap();
        assert_eq!(r.bytes_used(), 80);
        let first = r.handout().unwrap().as_ptr().addr();
        let second = r.handout().unwrap().as_ptr().addr();
        assert_eq!((first - base, second - base), (0, 40));
        r.complete(2).unwrap();
        // An empty ring takes a packet of its whole size.
        r.push(t(0), &[3; 100]).unwrap();
        assert_eq!(r.bytes_used(), 100);
    }

    #[test]
    fn a_misaligned_arena_starts_at_its_first_aligned_address() {
        let mut backing = vec![0u8; 100 + 128];
        let (mut r, base) = ring_at(&mut backing, 32, 100);
        r.push(t(0), &[1; 40]).unwrap();
        assert_eq!(r.handout().unwrap().as_ptr().addr() - base, 32);
        assert_eq!(r.bytes_used(), 40);
        // Neither [72, 100) nor [0, 32) holds 40 bytes: refused, as the fit guarantee allows
        // (40 used + 40 + 40 > 100). The same ring packed would have taken it.
        assert!(!r.fits(40));
        assert!(r.fits(32));
        r.complete(1).unwrap();
        r.push(t(0), &[2; 100]).unwrap();
        assert_eq!(
            r.bytes_used(),
            100,
            "an empty ring still takes its whole size"
        );
    }

    #[test]
    fn packets_stay_contiguous_across_the_wrap() {
        let mut r = ring(10, 8);
        r.push(t(0), &[1; 4]).unwrap();
        r.push(t(0), &[2; 4]).unwrap();
        assert_eq!(r.handout(), Some(&[1u8; 4][..]));
        r.complete(1).unwrap();
        // 2 bytes remain at the end, so a 3-byte packet must start at offset 0.
        r.push(t(0), &[3; 3]).unwrap();
        assert!(
            !r.fits(2),
            "[0,3) and [4,8) are live; only 1 byte at 3 and 2 at the end"
        );
        assert_eq!(r.push(t(0), &[4; 3]), Err(PushError::Full));
        assert_eq!(r.handout(), Some(&[2u8; 4][..]));
        assert_eq!(r.handout(), Some(&[3u8; 3][..]));
        assert_eq!(
            r.in_flight().collect::<Vec<_>>(),
            vec![&[2u8; 4][..], &[3u8; 3][..]]
        );
        r.complete(2).unwrap();
        assert_eq!(r.bytes_used(), 0);
        assert!(r.fits(10), "an empty ring offers its whole arena again");
    }

    #[test]
    fn slot_count_bounds_packets() {
        let mut r = ring(100, 3);
        for _ in 0..3 {
            r.push(t(0), &[0; 1]).unwrap();
        }
        assert_eq!(r.push(t(0), &[0; 1]), Err(PushError::Full));
        assert_eq!(r.levels().packets_queued, 3);
    }

    #[test]
    fn complete_more_than_in_flight_changes_nothing() {
        let mut r = ring(32, 4);
        r.push(t(0), &[1; 8]).unwrap();
        r.push(t(0), &[2; 8]).unwrap();
        r.handout().unwrap();
        let before = r.levels();
        assert_eq!(
            r.complete(2),
            Err(CompleteError {
                requested: 2,
                in_flight: 1
            })
        );
        assert_eq!(r.levels(), before);
        assert_eq!(r.complete(0), Ok(Released::default()));
    }

    #[test]
    fn dropping_behind_in_flight_reclaims_on_completion() {
        let mut r = ring(12, 4);
        r.push(t(0), &[1; 4]).unwrap();
        r.push(t(0), &[2; 4]).unwrap();
        r.push(t(0), &[3; 4]).unwrap();
        r.handout().unwrap();
        assert_eq!(r.drop_queued_front(), Some(4));
        let levels = r.levels();
        assert_eq!(
            (levels.packets_queued, levels.bytes_dropped_pending),
            (1, 4)
        );
        assert_eq!(r.bytes_used(), 12, "dropped bytes still occupy the arena");
        assert!(!r.fits(1));
        assert_eq!(
            r.in_flight().count(),
            1,
            "a dropped packet is never shown as in flight"
        );
        assert_eq!(r.handout(), Some(&[3u8; 4][..]));
        assert_eq!(
            r.complete(1),
            Ok(Released {
                packets: 1,
                bytes: 4
            })
        );
        assert_eq!(
            r.levels().bytes_dropped_pending,
            0,
            "reclaimed behind the completed packet"
        );
        assert_eq!(r.bytes_used(), 4);
        assert_eq!(r.in_flight().collect::<Vec<_>>(), vec![&[3u8; 4][..]]);
    }

    #[test]
    fn enqueue_time_is_kept_per_packet() {
        let mut r = ring(32, 4);
        r.push(t(10), &[1; 2]).unwrap();
        r.push(t(20), &[2; 2]).unwrap();
        assert_eq!(r.queued_front_enqueued_at(), Some(t(10)));
        r.handout().unwrap();
        assert_eq!(r.queued_front_enqueued_at(), Some(t(20)));
        assert_eq!(r.queued_front_len(), Some(2));
        assert_eq!(r.handout_stamped(), Some((t(20), &[2u8; 2][..])));
        assert_eq!(r.handout_stamped(), None);
    }

    #[test]
    // Slow under Miri (an exhaustive loop of safe arithmetic); the normal run covers it.
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn fit_guarantee_holds_below_the_documented_bound() {
        for align in [1, 8, 64] {
            fit_guarantee_holds_with_alignment(align);
        }
    }

    fn fit_guarantee_holds_with_alignment(align: usize) {
        // A packet of `len` always fits while used + len + max(len, largest) <= capacity, where
        // `used` counts the alignment padding; here every length is at most `max_len`, so the
        // bound used + len + max_len covers both.
        let (capacity, max_len) = (1000, 97);
        let mut r = aligned_ring(capacity, 1000, align);
        let mut model: VecDeque<usize> = VecDeque::new();
        let mut lens = (1..=max_len).cycle();
        for round in 0..20_000usize {
            let len = lens.next().unwrap();
            if r.bytes_used() + len + max_len <= capacity {
                r.push(t(0), &vec![0; len]).unwrap();
                model.push_back(len);
            } else {
                let n = 1 + round % 3;
                for _ in 0..n.min(model.len()) {
                    r.handout().unwrap();
                    model.pop_front();
                }
                r.complete(r.levels().packets_in_flight).unwrap();
            }
        }
    }

    #[test]
    fn a_panicking_write_leaves_the_ring_as_it_was() {
        let mut r = ring(64, 4);
        r.push(t(1), &[1; 8]).unwrap();
        let before = (r.levels(), r.bytes_used());
        let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.push_with(t(2), 6, |dst| {
                dst[..2].copy_from_slice(&[7, 7]);
                panic!("the host's gather failed");
            })
        }));
        assert!(pushed.is_err());
        assert_eq!((r.levels(), r.bytes_used()), before);
        assert_eq!(r.handout(), Some(&[1u8; 8][..]));
        assert_eq!(
            r.handout(),
            None,
            "the packet whose write panicked is not queued"
        );
        // The ring goes on as usual.
        assert_eq!(r.complete(1).map(|released| released.bytes), Ok(8));
        r.push(t(3), &[3; 10]).unwrap();
        assert_eq!(r.handout(), Some(&[3u8; 10][..]));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u16),
        Handout,
        /// `handout_batch` with this `max`.
        HandoutBatch(u8),
        Complete(u8),
        Drop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u16..300).prop_map(Op::Push),
            3 => Just(Op::Handout),
            2 => (0u8..6).prop_map(Op::HandoutBatch),
            2 => (0u8..6).prop_map(Op::Complete),
            1 => Just(Op::Drop),
        ]
    }

    proptest! {
        #![proptest_config(crate::proptest_config::with_cases(400))]

        /// The ring behaves like `VecDeque<Vec<u8>>` queues, bounded by its arena and slots, and
        /// refuses a packet only when the documented fit guarantee allows it to.
        #[test]
        fn matches_a_vecdeque_model(
            arena in 1usize..1500,
            slots in 1usize..40,
            align_log2 in 0u32..8,
            ops in proptest::collection::vec(op(), 1..crate::proptest_config::ops(400)),
        ) {
            let align = 1usize << align_log2;
            let mut r = aligned_ring(arena, slots, align);
            let mut queued: VecDeque<Vec<u8>> = VecDeque::new();
            // Handed-out packets in arena order; `true` marks one dropped behind in-flight ones.
            let mut handed: VecDeque<(Vec<u8>, bool)> = VecDeque::new();
            let mut largest_since_empty = 0usize;
            let mut seq = 0u8;
            for op in ops {
                match op {
                    Op::Push(len) => {
                        let len = usize::from(len);
                        seq = seq.wrapping_add(1);
                        let packet: Vec<u8> =
                            (0..len).map(|i| seq.wrapping_add(i as u8)).collect();
                        let fits = r.fits(len);
                        let used = r.bytes_used();
                        let live = queued.len() + handed.len();
                        // Stamped with its own first byte, so a hand-out's stamp can be checked.
                        match r.push(t(u64::from(seq)), &packet) {
                            Ok(()) => {
                                prop_assert!(fits);
                                largest_since_empty = largest_since_empty.max(len);
                                queued.push_back(packet);
                            }
                            Err(PushError::Full) => {
                                prop_assert!(!fits);
                                let bound = len.max(largest_since_empty);
                                prop_assert!(live >= slots || used + len + bound > arena);
                            }
                            Err(PushError::Empty) => prop_assert!(false, "non-empty packet"),
                        }
                    }
                    Op::Handout => {
                        let got = r.handout().map(<[u8]>::to_vec);
                        let want = queued.pop_front();
                        if let Some(p) = &want {
                            handed.push_back((p.clone(), false));
                        }
                        prop_assert_eq!(got, want);
                    }
                    Op::HandoutBatch(max) => {
                        let mut got = Vec::new();
                        let (count, last) =
                            r.handout_batch(usize::from(max), |p| got.push(p.to_vec()));
                        let want: Vec<Vec<u8>> =
                            (0..usize::from(max)).map_while(|_| queued.pop_front()).collect();
                        prop_assert_eq!(count, want.len());
                        let last_stamp = want.last().map(|p| t(u64::from(p[0])));
                        prop_assert_eq!(last, last_stamp, "when the last one was pushed");
                        handed.extend(want.iter().map(|p| (p.clone(), false)));
                        prop_assert_eq!(got, want);
                    }
                    Op::Complete(n) => {
                        let n = usize::from(n);
                        let in_flight = handed.iter().filter(|(_, dropped)| !dropped).count();
                        let result = r.complete(n);
                        if n > in_flight {
                            prop_assert_eq!(
                                result,
                                Err(CompleteError { requested: n, in_flight })
                            );
                        } else {
                            let mut want = Released::default();
                            while let Some((p, dropped)) = handed.front() {
                                if !dropped {
                                    if want.packets == n {
                                        break;
                                    }
                                    want.packets += 1;
                                    want.bytes += p.len();
                                }
                                handed.pop_front();
                            }
                            prop_assert_eq!(result, Ok(want));
                        }
                    }
                    Op::Drop => {
                        let got = r.drop_queued_front();
                        let want = queued.pop_front();
                        prop_assert_eq!(got, want.as_ref().map(Vec::len));
                        if let Some(p) = want
                            && !handed.is_empty()
                        {
                            handed.push_back((p, true));
                        }
                    }
                }
                if queued.is_empty() && handed.is_empty() {
                    largest_since_empty = 0;
                }
                let levels = r.levels();
                let live_in_flight: Vec<Vec<u8>> = handed
                    .iter()
                    .filter(|(_, dropped)| !dropped)
                    .map(|(p, _)| p.clone())
                    .collect();
                let pending: usize =
                    handed.iter().filter(|(_, dropped)| *dropped).map(|(p, _)| p.len()).sum();
                prop_assert_eq!(levels.packets_queued, queued.len());
                prop_assert_eq!(levels.bytes_queued, queued.iter().map(Vec::len).sum::<usize>());
                prop_assert_eq!(levels.packets_in_flight, live_in_flight.len());
                prop_assert_eq!(
                    levels.bytes_in_flight,
                    live_in_flight.iter().map(Vec::len).sum::<usize>()
                );
                prop_assert_eq!(levels.bytes_dropped_pending, pending);
                prop_assert!(r.bytes_used() <= arena);
                let live = queued.len() + handed.len();
                let payload = levels.payload_bytes();
                prop_assert!(payload <= r.bytes_used());
                prop_assert!(r.bytes_used() <= payload + live * (align - 1));
                prop_assert!(queued.len() + handed.len() <= slots);
                let shown: Vec<Vec<u8>> = r.in_flight().map(<[u8]>::to_vec).collect();
                prop_assert_eq!(shown, live_in_flight);
            }
        }
    }
}
