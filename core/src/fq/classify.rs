//! Which flow a packet belongs to: a keyed hash of its 5-tuple, read from the IP headers alone.
//!
//! The parser reads only the fixed fields it needs and checks every offset against the packet's
//! real length; it never trusts a length field (IPv4 total length, IPv6 payload length) and never
//! refuses a packet. What it cannot parse lands in one fallback flow.
//!
//! | Packet                                   | Key                                          |
//! |------------------------------------------|----------------------------------------------|
//! | IPv4/IPv6 TCP, UDP, UDP-Lite, SCTP, DCCP | addresses, protocol, ports                   |
//! | other protocols (ICMP, ICMPv6, GRE, ...) | addresses, protocol                          |
//! | a fragment (IPv4 MF or offset, IPv6 Fragment header) | addresses, "fragment"          |
//! | too short, unknown version, bad header length | "malformed"                             |
//!
//! Fragments are keyed by their address pair alone, so that every fragment of every datagram
//! between two hosts lands in the same queue: later fragments carry no ports, and keying by the
//! datagram's identification would let a fragmenting flood spread over many queues and win many
//! shares. The cost is that fragmented and whole packets of one flow may take two queues, and so
//! be reordered against each other.
//!
//! The hash is SipHash-2-4 keyed with the host's 16 random bytes: without the key, a sender
//! cannot choose addresses and ports that land in a victim's queue. Two flows whose keys hash to
//! the same queue share it (a collision), as in Linux's fq_codel; more queues make that rarer.

// `core::hash::SipHasher` is deprecated only in favour of std's `DefaultHasher`, which a `no_std`
// crate cannot use; it is SipHash-2-4, keyed, and exactly what a flow hash needs.
#[allow(deprecated)]
use core::hash::{Hasher, SipHasher};

/// IP protocols whose first four transport bytes are the source and destination ports.
const PORTED: [u8; 5] = [6, 17, 33, 132, 136];
/// IPv6 extension headers the parser steps over: hop-by-hop, routing, destination options, and
/// the authentication header (whose length is counted differently).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
/// The most IPv6 extension headers followed before the packet counts as malformed.
const MAX_EXTENSION_HEADERS: usize = 8;

/// What the parser found, before hashing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowKey<'p> {
    /// A whole datagram: addresses, protocol and, for ported protocols, the ports (else 0).
    Datagram {
        src: &'p [u8],
        dst: &'p [u8],
        protocol: u8,
        ports: [u8; 4],
    },
    /// A fragment of a datagram between these addresses.
    Fragment { src: &'p [u8], dst: &'p [u8] },
    /// Not an IPv4 or IPv6 header this parser can read.
    Malformed,
}

/// The flow key of `packet`, read from its IP header.
pub(crate) fn flow_key(packet: &[u8]) -> FlowKey<'_> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => ipv4(packet),
        Some(6) => ipv6(packet),
        _ => None,
    }
    .unwrap_or(FlowKey::Malformed)
}

/// The keyed hash of `packet`'s flow.
pub(crate) fn flow_hash(packet: &[u8], seed: &[u8; 16]) -> u64 {
    let (k0, k1) = seed.split_at(8);
    let key = |half: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(half);
        u64::from_le_bytes(word)
    };
    #[allow(deprecated)]
    let mut hasher = SipHasher::new_with_keys(key(k0), key(k1));
    match flow_key(packet) {
        FlowKey::Datagram {
            src,
            dst,
            protocol,
            ports,
        } => {
            hasher.write_u8(0);
            hasher.write(src);
            hasher.write(dst);
            hasher.write_u8(protocol);
            hasher.write(&ports);
        }
        FlowKey::Fragment { src, dst } => {
            hasher.write_u8(1);
            hasher.write(src);
            hasher.write(dst);
        }
        FlowKey::Malformed => hasher.write_u8(2),
    }
    hasher.finish()
}

/// The queue, of `queues`, that a hash picks: the high bits scaled down, without a division.
pub(crate) fn queue_of(hash: u64, queues: usize) -> usize {
    (((hash >> 32) * queues as u64) >> 32) as usize
}

fn ipv4(packet: &[u8]) -> Option<FlowKey<'_>> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    if header_len < 20 || header_len > packet.len() {
        return None;
    }
    let protocol = *packet.get(9)?;
    let src = packet.get(12..16)?;
    let dst = packet.get(16..20)?;
    let flags_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
    // More-fragments set, or a non-zero offset: part of a fragmented datagram.
    if flags_offset & 0x3fff != 0 {
        return Some(FlowKey::Fragment { src, dst });
    }
    Some(datagram(src, dst, protocol, packet.get(header_len..)))
}

fn ipv6(packet: &[u8]) -> Option<FlowKey<'_>> {
    let src = packet.get(8..24)?;
    let dst = packet.get(24..40)?;
    let mut next = *packet.get(6)?;
    let mut offset = 40usize;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let header_len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => (usize::from(*packet.get(offset + 1)?) + 1) * 8,
            AUTH => (usize::from(*packet.get(offset + 1)?) + 2) * 4,
            FRAGMENT => return Some(FlowKey::Fragment { src, dst }),
            protocol => return Some(datagram(src, dst, protocol, packet.get(offset..))),
        };
        next = *packet.get(offset)?;
        offset = offset.checked_add(header_len)?;
        if offset > packet.len() {
            return None;
        }
    }
    None
}

fn datagram<'p>(
    src: &'p [u8],
    dst: &'p [u8],
    protocol: u8,
    transport: Option<&[u8]>,
) -> FlowKey<'p> {
    let ports = match transport.and_then(|t| t.first_chunk::<4>()) {
        Some(ports) if PORTED.contains(&protocol) => *ports,
        _ => [0; 4],
    };
    FlowKey::Datagram {
        src,
        dst,
        protocol,
        ports,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An IPv4 packet: 20-byte header, then `payload`.
    pub(crate) fn v4(
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        frag: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, protocol, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    /// A UDP/IPv4 packet between two ports, with `len` bytes of payload.
    pub(crate) fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, len: usize) -> Vec<u8> {
        let mut udp = Vec::new();
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        udp.extend_from_slice(&[0; 4]);
        udp.resize(8 + len, 0xab);
        v4(src, dst, 17, 0, &udp)
    }

    /// An IPv6 packet with the given extension headers (next-header, bytes) before `payload`.
    fn v6(next: u8, extensions: &[(u8, Vec<u8>)], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p.extend_from_slice(&[0x20; 16]);
        p.extend_from_slice(&[0x30; 16]);
        for (_, header) in extensions {
            p.extend_from_slice(header);
        }
        p.extend_from_slice(payload);
        p
    }

    const SEED: [u8; 16] = *b"0123456789abcdef";

    #[test]
    fn ipv4_keys_by_five_tuple() {
        let a = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 53, 10);
        assert_eq!(
            flow_key(&a),
            FlowKey::Datagram {
                src: &[10, 0, 0, 1],
                dst: &[10, 0, 0, 2],
                protocol: 17,
                ports: [0x03, 0xe8, 0, 53],
            }
        );
        let b = udp4([10, 0, 0, 1], 1001, [10, 0, 0, 2], 53, 10);
        assert_ne!(flow_hash(&a, &SEED), flow_hash(&b, &SEED));
        // The payload is not part of the key.
        let c = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 53, 500);
        assert_eq!(flow_hash(&a, &SEED), flow_hash(&c, &SEED));
        // ICMP: the address pair and protocol, no ports.
        let ping = v4([10, 0, 0, 1], [10, 0, 0, 2], 1, 0, &[8, 0, 1, 2, 3, 4]);
        assert!(matches!(
            flow_key(&ping),
            FlowKey::Datagram {
                protocol: 1,
                ports: [0, 0, 0, 0],
                ..
            }
        ));
    }

    #[test]
    fn ipv4_options_move_the_ports() {
        let mut p = udp4([1, 1, 1, 1], 7, [2, 2, 2, 2], 9, 4);
        p[0] = 0x46;
        p.splice(20..20, [0xee; 4]);
        let FlowKey::Datagram { ports, .. } = flow_key(&p) else {
            panic!()
        };
        assert_eq!(ports, [0, 7, 0, 9]);
    }

    #[test]
    fn every_fragment_of_a_datagram_shares_one_key_with_every_other_datagram_between_the_pair() {
        let first = v4(
            [1, 1, 1, 1],
            [2, 2, 2, 2],
            17,
            0x2000,
            &[0, 7, 0, 9, 0, 0, 0, 0],
        );
        let middle = v4([1, 1, 1, 1], [2, 2, 2, 2], 17, 0x2000 | 185, &[0xaa; 8]);
        let last = v4([1, 1, 1, 1], [2, 2, 2, 2], 17, 370, &[0xbb; 8]);
        let mut other_datagram = v4([1, 1, 1, 1], [2, 2, 2, 2], 17, 0x2000, &[0, 8, 0, 9]);
        other_datagram[4] = 0x77; // another identification
        let hashes: Vec<u64> = [&first, &middle, &last, &other_datagram]
            .iter()
            .map(|p| flow_hash(p, &SEED))
            .collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:x?}");
        // Don't-fragment alone is not a fragment.
        let df = v4([1, 1, 1, 1], [2, 2, 2, 2], 17, 0x4000, &[0, 7, 0, 9]);
        assert!(matches!(flow_key(&df), FlowKey::Datagram { .. }));
    }

    #[test]
    fn ipv6_steps_over_extension_headers_and_keys_fragments_by_pair() {
        let tcp = [0x01, 0xbb, 0xc0, 0x00, 0, 0, 0, 0];
        let plain = v6(6, &[], &tcp);
        let FlowKey::Datagram {
            protocol,
            ports,
            src,
            ..
        } = flow_key(&plain)
        else {
            panic!()
        };
        assert_eq!((protocol, ports, src.len()), (6, [0x01, 0xbb, 0xc0, 0], 16));
        // Hop-by-hop (8 bytes) then destination options (16 bytes), then TCP.
        let hbh = {
            let mut h = vec![DEST_OPTS, 0];
            h.resize(8, 0);
            h
        };
        let dst_opts = {
            let mut h = vec![6, 1];
            h.resize(16, 0);
            h
        };
        let extended = v6(
            HOP_BY_HOP,
            &[(HOP_BY_HOP, hbh), (DEST_OPTS, dst_opts)],
            &tcp,
        );
        assert_eq!(flow_hash(&plain, &SEED), flow_hash(&extended, &SEED));
        let frag_a = v6(FRAGMENT, &[], &[6, 0, 0, 1, 0, 0, 0, 1, 0x01, 0xbb]);
        let frag_b = v6(FRAGMENT, &[], &[6, 0, 0x05, 0x38, 0, 0, 0, 1]);
        assert_eq!(flow_hash(&frag_a, &SEED), flow_hash(&frag_b, &SEED));
        assert!(matches!(flow_key(&frag_a), FlowKey::Fragment { .. }));
    }

    #[test]
    fn what_cannot_be_parsed_is_malformed_never_refused() {
        for p in [
            &[][..],
            &[0x45; 19][..],
            &[0x4f; 40][..], // header length 60 > packet
            &[0x44; 40][..], // header length 16 < 20
            &[0x60; 39][..], // IPv6 shorter than its header
            &[0x10; 60][..], // version 1
        ] {
            assert_eq!(flow_key(p), FlowKey::Malformed, "{p:?}");
        }
        // An extension header that runs past the packet.
        let mut p = v6(ROUTING, &[], &[6, 200]);
        assert_eq!(flow_key(&p), FlowKey::Malformed);
        // Nine chained extension headers: more than the parser follows.
        p = v6(DEST_OPTS, &[], &[]);
        for _ in 0..9 {
            p.extend_from_slice(&[DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(flow_key(&p), FlowKey::Malformed);
        // A truncated transport header keeps the address pair and protocol.
        let short = v4([1, 1, 1, 1], [2, 2, 2, 2], 6, 0, &[0, 80]);
        assert!(matches!(
            flow_key(&short),
            FlowKey::Datagram {
                ports: [0, 0, 0, 0],
                ..
            }
        ));
    }

    #[test]
    fn the_seed_moves_flows_between_queues() {
        let flows: Vec<Vec<u8>> = (0..64u16)
            .map(|port| udp4([10, 0, 0, 1], port, [10, 0, 0, 2], 443, 0))
            .collect();
        let queues = |seed: &[u8; 16]| -> Vec<usize> {
            flows
                .iter()
                .map(|p| queue_of(flow_hash(p, seed), 1024))
                .collect()
        };
        assert_ne!(queues(&SEED), queues(&[7; 16]));
    }

    proptest! {
        #![proptest_config(crate::proptest_config::default_cases())]

        /// Any bytes classify, and the queue index is always in range.
        #[test]
        fn any_bytes_classify_into_a_queue(packet in proptest::collection::vec(any::<u8>(), 0..128), queues in 1usize..=65_536) {
            let q = queue_of(flow_hash(&packet, &SEED), queues);
            prop_assert!(q < queues);
        }

        /// Hashes spread: 4096 flows over 64 queues leave no queue empty or more than 3x loaded.
        #[test]
        fn flows_spread_over_queues(seed in any::<[u8; 16]>()) {
            let mut load = [0u32; 64];
            for port in 0..4096u16 {
                let p = udp4([10, 0, 0, 1], port, [10, 0, 0, 2], 443, 0);
                load[queue_of(flow_hash(&p, &seed), 64)] += 1;
            }
            prop_assert!(load.iter().all(|&n| n > 0 && n < 3 * 64), "{load:?}");
        }
    }
}
