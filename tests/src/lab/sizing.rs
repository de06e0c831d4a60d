//! The sizing helper: ring sizes and flow watermarks from a link's rate and round-trip time.
//!
//! ```text
//! cargo run --release -p tidegate-tests --bin tidegate-lab -- size --rate-mbit 100 --rtt-ms 80
//! ```
//!
//! The rule, per direction of the packet tunnel:
//!
//! - **High watermark** = the bandwidth-delay product (`rate × RTT`), rounded up to whole KiB,
//!   and at least four maximum-size packets: enough queued and in flight to keep the link busy
//!   for one round trip.
//! - **Headroom** above it = one read batch of maximum-size packets (at least two, which
//!   [`TunnelConfig::validate`] requires), each counted with its alignment padding (the MTU
//!   rounded up to the default 64-byte packet alignment), rounded up to KiB: a `readPackets`
//!   batch issued while reading was still allowed always fits.
//! - **Ring bytes** = high watermark + headroom; the inbound ring gets the same size, so it
//!   absorbs a round trip of burst plus a batch.
//! - **Low watermark** = half the high one, so a paused reader resumes with half a round trip
//!   still queued and does not flap.
//! - **Packets** = bytes divided by the average packet size, rounded up, with at least a read
//!   batch of slots above the packet high watermark.
//!
//! For the flow governor, one flow may need the whole link: the per-flow high watermark is the
//! bandwidth-delay product (at least 64 KiB, at most a quarter of the global watermark), the low
//! one a quarter of it; everything else is [`FlowPolicy::APPLE_DEFAULT`].

use std::fmt::{self, Write as _};

use tidegate_core::{
    ConfigError, DEFAULT_FLOW_SLOTS, FlowPolicy, PacketTunnel, PolicyError, Slot, TunnelConfig,
    flow_governor_footprint,
};

/// What the helper is asked to size for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizingInput {
    /// Link rate in Mbit/s (10^6 bits per second).
    pub rate_mbit: f64,
    /// Round-trip time of the tunnel path in milliseconds.
    pub rtt_ms: f64,
    /// The tunnel MTU: the largest packet, in bytes.
    pub mtu: u32,
    /// The average packet size expected, in bytes (small packets need more slots).
    pub average_packet: u32,
    /// Packets one `readPackets` call may return.
    pub read_batch: u32,
}

impl SizingInput {
    /// Defaults for everything but the rate and the round-trip time: MTU 1400, average packet
    /// 512 bytes (a mix of full-size data and ACKs), read batch 64.
    pub const fn new(rate_mbit: f64, rtt_ms: f64) -> SizingInput {
        SizingInput {
            rate_mbit,
            rtt_ms,
            mtu: 1400,
            average_packet: 512,
            read_batch: 64,
        }
    }
}

/// The recommendation, validated by the engines themselves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sizing {
    /// What was asked.
    pub input: SizingInput,
    /// `rate × RTT` in bytes, rounded up.
    pub bandwidth_delay_bytes: u64,
    /// The packet tunnel configuration; [`TunnelConfig::validate`] accepted it.
    pub tunnel: TunnelConfig,
    /// [`PacketTunnel::footprint`]: both arenas and both slot arrays, in bytes.
    pub tunnel_storage_bytes: usize,
    /// The engine's own struct, in bytes (the storage is held out of line, as boxed slices).
    pub tunnel_struct_bytes: usize,
    /// The flow governor policy; [`FlowPolicy::validate`] accepted it for
    /// [`DEFAULT_FLOW_SLOTS`] slots.
    pub flow_policy: FlowPolicy,
    /// [`flow_governor_footprint`] for [`DEFAULT_FLOW_SLOTS`] slots, in bytes.
    pub flow_governor_bytes: usize,
}

/// Why no recommendation could be made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SizingError {
    /// An input is out of range; the message names it and the range.
    Input(&'static str),
    /// The tunnel configuration was refused (a ring would be too large, for instance).
    Tunnel(ConfigError),
    /// The flow policy was refused.
    Flow(PolicyError),
}

impl fmt::Display for SizingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizingError::Input(what) => f.write_str(what),
            SizingError::Tunnel(error) => write!(f, "tunnel configuration refused: {error}"),
            SizingError::Flow(error) => write!(f, "flow policy refused: {error}"),
        }
    }
}

impl std::error::Error for SizingError {}

const KIB: u64 = 1024;

/// Size the rings and the flow watermarks for `input`.
///
/// # Errors
///
/// [`SizingError::Input`] for an input out of range; [`SizingError::Tunnel`] or
/// [`SizingError::Flow`] if the engines refuse the result (a path so fast and long that a ring
/// would pass the arena limit).
pub fn recommend(input: SizingInput) -> Result<Sizing, SizingError> {
    if !(input.rate_mbit > 0.0 && input.rate_mbit <= 1_000_000.0) {
        return Err(SizingError::Input(
            "--rate-mbit must be above 0 and at most 1000000",
        ));
    }
    if !(input.rtt_ms > 0.0 && input.rtt_ms <= 60_000.0) {
        return Err(SizingError::Input(
            "--rtt-ms must be above 0 and at most 60000",
        ));
    }
    if !(68..=65_535).contains(&input.mtu) {
        return Err(SizingError::Input("--mtu must be 68 to 65535"));
    }
    if !(20..=input.mtu).contains(&input.average_packet) {
        return Err(SizingError::Input("--avg-packet must be 20 to the MTU"));
    }
    if !(1..=4_096).contains(&input.read_batch) {
        return Err(SizingError::Input("--read-batch must be 1 to 4096"));
    }
    let bandwidth_delay_bytes =
        (input.rate_mbit * 125_000.0 * input.rtt_ms / 1_000.0).ceil() as u64;
    let mtu = u64::from(input.mtu);
    let high = round_up_kib(bandwidth_delay_bytes.max(4 * mtu));
    // Full-size packets read back to back each take the MTU rounded up to the packet alignment.
    let packet_arena = mtu.next_multiple_of(u64::from(TunnelConfig::DEFAULT.packet_align));
    let headroom = round_up_kib(u64::from(input.read_batch.max(2)) * packet_arena);
    let ring_bytes = high + headroom;
    let average = u64::from(input.average_packet);
    let high_packets = high.div_ceil(average);
    let ring_packets = ring_bytes
        .div_ceil(average)
        .max(high_packets + u64::from(input.read_batch));
    let to_u32 = |value: u64| {
        u32::try_from(value).map_err(|_| SizingError::Input("the path needs rings past 4 GiB"))
    };
    let tunnel = TunnelConfig {
        outbound_bytes: to_u32(ring_bytes)?,
        outbound_packets: to_u32(ring_packets)?,
        inbound_bytes: to_u32(ring_bytes)?,
        inbound_packets: to_u32(ring_packets)?,
        max_packet_len: input.mtu,
        outbound_high_watermark_bytes: to_u32(high)?,
        outbound_low_watermark_bytes: to_u32(high / 2)?,
        outbound_high_watermark_packets: to_u32(high_packets)?,
        outbound_low_watermark_packets: to_u32(high_packets / 2)?,
        ..TunnelConfig::DEFAULT
    };
    tunnel.validate().map_err(SizingError::Tunnel)?;

    let defaults = FlowPolicy::APPLE_DEFAULT;
    let flow_high = round_up_kib(bandwidth_delay_bytes)
        .max(64 * KIB)
        .min(defaults.global_high_watermark / 4);
    let flow_policy = FlowPolicy {
        flow_high_watermark: flow_high,
        flow_low_watermark: flow_high / 4,
        ..defaults
    };
    flow_policy
        .validate(DEFAULT_FLOW_SLOTS)
        .map_err(SizingError::Flow)?;

    Ok(Sizing {
        input,
        bandwidth_delay_bytes,
        tunnel,
        tunnel_storage_bytes: PacketTunnel::<Box<[u8]>, Box<[Slot]>>::footprint(&tunnel),
        tunnel_struct_bytes: size_of::<PacketTunnel<Box<[u8]>, Box<[Slot]>>>(),
        flow_policy,
        flow_governor_bytes: flow_governor_footprint(DEFAULT_FLOW_SLOTS),
    })
}

/// The recommendation as a person reads it, with a Rust literal to paste.
pub fn report(sizing: &Sizing) -> String {
    let s = sizing;
    let t = &s.tunnel;
    let p = &s.flow_policy;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sizing for {} Mbit/s at {} ms RTT, MTU {}, average packet {} bytes, read batch {}\n",
        s.input.rate_mbit, s.input.rtt_ms, s.input.mtu, s.input.average_packet, s.input.read_batch
    );
    let _ = writeln!(
        out,
        "bandwidth-delay product: {} bytes ({}) per direction\n",
        s.bandwidth_delay_bytes,
        super::mib(s.bandwidth_delay_bytes)
    );
    let _ = writeln!(out, "packet tunnel (TunnelConfig::validate: ok)");
    let _ = writeln!(
        out,
        "  ring bytes        {:>9} per direction  (high watermark + one read batch of {} x {}, \
         {} aligned bytes each)",
        t.outbound_bytes,
        s.input.read_batch,
        s.input.mtu,
        u64::from(s.input.mtu).next_multiple_of(u64::from(t.packet_align))
    );
    let _ = writeln!(
        out,
        "  ring packets      {:>9} per direction  (bytes / {}-byte average packet)",
        t.outbound_packets, s.input.average_packet
    );
    let _ = writeln!(
        out,
        "  outbound high     {:>9} bytes, {} packets  (the BDP, rounded up to KiB)",
        t.outbound_high_watermark_bytes, t.outbound_high_watermark_packets
    );
    let _ = writeln!(
        out,
        "  outbound low      {:>9} bytes, {} packets  (half the high watermark)",
        t.outbound_low_watermark_bytes, t.outbound_low_watermark_packets
    );
    let slots = u64::from(t.outbound_packets) + u64::from(t.inbound_packets);
    let _ = writeln!(
        out,
        "  storage           {:>9} bytes  (PacketTunnel::footprint: 2 x {} arena + {} slots x {})",
        s.tunnel_storage_bytes,
        t.outbound_bytes,
        slots,
        size_of::<Slot>()
    );
    let total = s.tunnel_storage_bytes + s.tunnel_struct_bytes;
    let _ = writeln!(
        out,
        "  footprint         {:>9} bytes ({}) with the {}-byte engine; the C handle's figure \
         is tidegate_tunnel_footprint",
        total,
        super::mib(total as u64),
        s.tunnel_struct_bytes
    );
    let _ = writeln!(
        out,
        "\nflow governor (FlowPolicy::validate with {DEFAULT_FLOW_SLOTS} slots: ok)"
    );
    let _ = writeln!(
        out,
        "  per-flow          high {} bytes, low {} bytes  (one flow may fill the link)",
        p.flow_high_watermark, p.flow_low_watermark
    );
    let _ = writeln!(
        out,
        "  per-app           high {} bytes, low {} bytes  (APPLE_DEFAULT: a stalled app pauses alone)",
        p.app_high_watermark, p.app_low_watermark
    );
    let _ = writeln!(
        out,
        "  global            high {} bytes, low {} bytes  (APPLE_DEFAULT, for the 15 MiB limit)",
        p.global_high_watermark, p.global_low_watermark
    );
    let _ = writeln!(
        out,
        "  footprint         {:>9} bytes ({}) with {DEFAULT_FLOW_SLOTS} slots \
         (flow_governor_footprint)",
        s.flow_governor_bytes,
        super::mib(s.flow_governor_bytes as u64)
    );
    let _ = writeln!(out, "\nRust:\n");
    let _ = writeln!(
        out,
        "TunnelConfig {{\n    outbound_bytes: {}, outbound_packets: {},\n    \
         inbound_bytes: {}, inbound_packets: {},\n    max_packet_len: {},\n    \
         outbound_high_watermark_bytes: {}, outbound_low_watermark_bytes: {},\n    \
         outbound_high_watermark_packets: {}, outbound_low_watermark_packets: {},\n    \
         ..TunnelConfig::DEFAULT\n}}",
        t.outbound_bytes,
        t.outbound_packets,
        t.inbound_bytes,
        t.inbound_packets,
        t.max_packet_len,
        t.outbound_high_watermark_bytes,
        t.outbound_low_watermark_bytes,
        t.outbound_high_watermark_packets,
        t.outbound_low_watermark_packets
    );
    let _ = writeln!(
        out,
        "FlowPolicy {{ flow_high_watermark: {}, flow_low_watermark: {}, \
         ..FlowPolicy::APPLE_DEFAULT }}",
        p.flow_high_watermark, p.flow_low_watermark
    );
    out
}

fn round_up_kib(bytes: u64) -> u64 {
    bytes.div_ceil(KIB) * KIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hundred_megabit_at_eighty_milliseconds() {
        let sizing = recommend(SizingInput::new(100.0, 80.0)).unwrap();
        // 100e6 / 8 bytes per second for 0.08 s.
        assert_eq!(sizing.bandwidth_delay_bytes, 1_000_000);
        let t = sizing.tunnel;
        // 1,000,000 rounded up to KiB is 977 KiB.
        assert_eq!(t.outbound_high_watermark_bytes, 977 * 1024);
        assert_eq!(t.outbound_low_watermark_bytes, 977 * 512);
        // 64 x 1408 (1400 rounded up to 64-byte alignment) = 90,112 bytes of headroom: 88 KiB.
        assert_eq!(t.outbound_bytes, (977 + 88) * 1024);
        assert_eq!(t.inbound_bytes, t.outbound_bytes);
        // 1,090,560 / 512 = 2130 slots; the high watermark is 1,000,448 / 512 -> 1954 packets.
        assert_eq!(t.outbound_packets, 2130);
        assert_eq!(t.outbound_high_watermark_packets, 1954);
        assert_eq!(t.outbound_low_watermark_packets, 977);
        assert_eq!(t.max_packet_len, 1400);
        assert_eq!(
            sizing.tunnel_storage_bytes,
            2 * 1_090_560 + 2 * 2130 * size_of::<Slot>()
        );
        assert_eq!(sizing.flow_policy.flow_high_watermark, 977 * 1024);
        assert_eq!(sizing.flow_policy.flow_low_watermark, 977 * 256);
        assert_eq!(
            sizing.flow_governor_bytes,
            flow_governor_footprint(DEFAULT_FLOW_SLOTS)
        );
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn slow_short_paths_keep_the_minimums() {
        // 1 Mbit/s at 1 ms: a BDP of 125 bytes, far below four packets.
        let sizing = recommend(SizingInput {
            read_batch: 1,
            ..SizingInput::new(1.0, 1.0)
        })
        .unwrap();
        assert_eq!(sizing.bandwidth_delay_bytes, 125);
        let t = sizing.tunnel;
        assert_eq!(t.outbound_high_watermark_bytes, 6 * 1024); // 4 x 1400 -> 6 KiB
        // Two packets of headroom, 2 x 1408 aligned bytes -> 3 KiB.
        assert_eq!(t.outbound_bytes, 6 * 1024 + 3 * 1024);
        assert!(t.outbound_high_watermark_packets > t.outbound_low_watermark_packets);
        assert!(t.outbound_packets > t.outbound_high_watermark_packets);
        assert_eq!(sizing.flow_policy.flow_high_watermark, 64 * 1024);
    }

    #[test]
    fn small_packets_need_more_slots_not_more_bytes() {
        let big = recommend(SizingInput::new(50.0, 40.0)).unwrap();
        let small = recommend(SizingInput {
            average_packet: 64,
            ..SizingInput::new(50.0, 40.0)
        })
        .unwrap();
        assert_eq!(big.tunnel.outbound_bytes, small.tunnel.outbound_bytes);
        assert_eq!(
            small.tunnel.outbound_packets,
            small.tunnel.outbound_bytes.div_ceil(64)
        );
        assert!(small.tunnel_storage_bytes > big.tunnel_storage_bytes);
    }

    #[test]
    fn per_flow_watermark_is_capped_below_the_global_one() {
        let sizing = recommend(SizingInput::new(1_000.0, 200.0)).unwrap();
        assert_eq!(sizing.bandwidth_delay_bytes, 25_000_000);
        assert_eq!(
            sizing.flow_policy.flow_high_watermark,
            FlowPolicy::APPLE_DEFAULT.global_high_watermark / 4
        );
    }

    #[test]
    fn out_of_range_inputs_and_oversized_rings_are_refused() {
        assert!(matches!(
            recommend(SizingInput::new(0.0, 80.0)),
            Err(SizingError::Input(_))
        ));
        assert!(matches!(
            recommend(SizingInput::new(100.0, f64::NAN)),
            Err(SizingError::Input(_))
        ));
        assert!(matches!(
            recommend(SizingInput {
                average_packet: 2000,
                ..SizingInput::new(100.0, 80.0)
            }),
            Err(SizingError::Input(_))
        ));
        // 1 Tbit/s at 60 s needs rings far past what an arena may hold.
        assert!(matches!(
            recommend(SizingInput::new(1_000_000.0, 60_000.0)),
            Err(SizingError::Input(_) | SizingError::Tunnel(ConfigError::RingTooLarge { .. }))
        ));
        let report = report(&recommend(SizingInput::new(100.0, 80.0)).unwrap());
        assert!(report.contains("1000000 bytes"), "{report}");
        assert!(report.contains("TunnelConfig {"), "{report}");
    }
}
