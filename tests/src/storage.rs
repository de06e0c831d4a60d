//! Tunnel storage as a Rust host with an allocator builds it: boxed slot arrays and byte arenas
//! that start on the configured packet alignment.
//!
//! The ring aligns packet *addresses*, so with an arena at an arbitrary heap address the layout,
//! and the byte levels that include padding, could differ from one run to the next. An arena that
//! starts on a `packet_align` boundary makes them depend on the packets alone, which the
//! deterministic lab and the scenario tests rely on. The C library allocates its arenas the same
//! way.

use tidegate_core::{ConfigError, FlowQueue, PacketTunnel, Slot, TunnelConfig, TunnelStorage};

/// `len` zeroed bytes starting on an `align` boundary, in safe code: a boxed slice `align - 1`
/// bytes longer, viewed from its first aligned byte.
pub struct AlignedBytes {
    raw: Box<[u8]>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    /// `len` zeroed bytes whose first byte's address is a multiple of `align` (a power of two).
    pub fn zeroed(len: usize, align: usize) -> AlignedBytes {
        assert!(
            align.is_power_of_two(),
            "alignment {align} is a power of two"
        );
        let raw = vec![0u8; len + align - 1].into_boxed_slice();
        let start = raw.as_ptr().align_offset(align);
        assert!(start < align, "a byte pointer can always be aligned");
        AlignedBytes { raw, start, len }
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl AsMut<[u8]> for AlignedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// A tunnel over heap storage built by [`tunnel_storage`].
pub type HeapTunnel = PacketTunnel<AlignedBytes, Box<[Slot]>, Box<[FlowQueue]>>;

/// Heap storage for a tunnel.
pub type HeapStorage = TunnelStorage<AlignedBytes, Box<[Slot]>, Box<[FlowQueue]>>;

/// Storage for a tunnel with `config`: arenas on `config.packet_align` boundaries, boxed slots
/// and, in flow-queue mode, boxed queue tables.
pub fn tunnel_storage(config: &TunnelConfig) -> HeapStorage {
    let align = (config.packet_align as usize).max(1);
    let slots = |count: u32| vec![Slot::EMPTY; count as usize].into_boxed_slice();
    let queues = || vec![FlowQueue::EMPTY; config.aqm.flow_queues() as usize].into_boxed_slice();
    TunnelStorage {
        outbound_arena: AlignedBytes::zeroed(config.outbound_bytes as usize, align),
        outbound_slots: slots(config.outbound_packets),
        inbound_arena: AlignedBytes::zeroed(config.inbound_bytes as usize, align),
        inbound_slots: slots(config.inbound_packets),
        outbound_queues: queues(),
        inbound_queues: queues(),
    }
}

/// A tunnel with `config` over [`tunnel_storage`].
pub fn heap_tunnel(config: TunnelConfig) -> Result<HeapTunnel, ConfigError> {
    PacketTunnel::new(config, tunnel_storage(&config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_bytes_start_on_the_boundary_and_have_the_length() {
        for align in [1, 64, 4096] {
            let mut bytes = AlignedBytes::zeroed(1000, align);
            assert_eq!(bytes.as_ref().as_ptr().addr() % align, 0);
            assert_eq!(bytes.as_mut().len(), 1000);
            assert!(bytes.as_ref().iter().all(|&b| b == 0));
        }
    }
}
