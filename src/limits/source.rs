//! Per-source handshake counts in a fixed table, so unauthenticated peers can't grow it.
//!
//! A slot is a keyed hash of the source (IPv4 address, or IPv6 /64: one
//! subscriber usually holds a whole /64) into `SLOTS` counters. Sources that
//! share a slot share its count, which can only make their limit stricter,
//! never looser. The key is random per process, so a peer can't aim its
//! addresses at someone else's slot; filling every slot would take
//! `SLOTS` × limit concurrent handshakes, which the gateway's handshake
//! timeout and connection cap stop well before.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::{Permit, Refused, Release};

/// 64 KiB of counters: a few hundred concurrent sources rarely share one.
const SLOTS: usize = 1 << 14;

pub(super) struct SourceTable {
    slots: Box<[AtomicU32]>,
    max: u32,
    key: RandomState,
    refused: AtomicU64,
}

impl SourceTable {
    pub(super) fn new(max: u32) -> Self {
        SourceTable {
            slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            max,
            key: RandomState::new(),
            refused: AtomicU64::new(0),
        }
    }

    fn slot(&self, source: IpAddr) -> usize {
        // IPv4 peers on a dual-stack socket arrive as ::ffff:a.b.c.d.
        let h = match source.to_canonical() {
            IpAddr::V4(a) => self.key.hash_one((4u8, u32::from(a))),
            IpAddr::V6(a) => self.key.hash_one((6u8, u128::from(a) >> 64)),
        };
        (h as usize) & (SLOTS - 1)
    }

    /// Counts a handshake from `source` unless its slot is at the limit.
    pub(super) fn acquire(table: &Arc<Self>, source: IpAddr) -> Result<Permit, Refused> {
        let slot = table.slot(source);
        // Relaxed: a lone counter guarding no other memory (as in the parent).
        let max = table.max;
        let counted = table.slots[slot] // ok: slot is masked below SLOTS
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1));
        if counted.is_err() {
            table.refused.fetch_add(1, Relaxed);
            return Err(Refused);
        }
        Ok(Permit(Release::Source(Arc::clone(table), slot)))
    }

    pub(super) fn release(&self, slot: usize) {
        self.slots[slot].fetch_sub(1, Relaxed); // ok: only `acquire` makes slots
    }

    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    #[cfg(test)]
    fn count(&self, source: IpAddr) -> u32 {
        self.slots[self.slot(source)].load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn table(max: u32) -> Arc<SourceTable> {
        Arc::new(SourceTable::new(max))
    }

    fn v4(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, d))
    }

    fn v6(net: u16, host: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, net, host, 0, 0, 1))
    }

    /// An address from `candidates` in another slot than `other` (the key is
    /// random, so any fixed pair collides in one run in 16384).
    fn elsewhere(
        t: &SourceTable,
        other: IpAddr,
        mut candidates: impl Iterator<Item = IpAddr>,
    ) -> IpAddr {
        let taken = t.slot(other);
        let Some(a) = candidates.find(|a| t.slot(*a) != taken) else {
            panic!("every candidate shares a slot with {other}");
        };
        a
    }

    #[test]
    fn a_source_address_over_its_handshake_limit_is_refused() {
        let t = table(2);
        let first = SourceTable::acquire(&t, v4(1));
        let second = SourceTable::acquire(&t, v4(1));
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(SourceTable::acquire(&t, v4(1)).err(), Some(Refused));
        assert_eq!(t.refused(), 1);
        let b = elsewhere(&t, v4(1), (2..=255).map(v4));
        assert!(
            SourceTable::acquire(&t, b).is_ok(),
            "another source is unaffected"
        );
        drop(first);
        assert!(
            SourceTable::acquire(&t, v4(1)).is_ok(),
            "a finished handshake frees room"
        );
    }

    #[test]
    fn ipv6_sources_in_one_slash_64_share_a_limit() {
        let t = table(1);
        let held = SourceTable::acquire(&t, v6(2, 0));
        assert!(held.is_ok());
        assert_eq!(SourceTable::acquire(&t, v6(2, 0xffff)).err(), Some(Refused));
        let other = elsewhere(&t, v6(2, 0), (3..=u16::MAX).map(|n| v6(n, 0)));
        assert!(
            SourceTable::acquire(&t, other).is_ok(),
            "another /64 is unaffected"
        );
    }

    #[test]
    fn an_ipv4_mapped_source_counts_as_its_ipv4_address() {
        let t = table(1);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        let held = SourceTable::acquire(&t, v4(7));
        assert!(held.is_ok());
        assert_eq!(SourceTable::acquire(&t, mapped).err(), Some(Refused));
    }

    #[test]
    fn dropped_handshake_permits_return_their_slot_to_zero() {
        let t = table(3);
        let permits: Vec<_> = (0..3).map(|_| SourceTable::acquire(&t, v4(9))).collect();
        assert!(permits.iter().all(Result::is_ok));
        assert_eq!(t.count(v4(9)), 3);
        drop(permits);
        assert_eq!(t.count(v4(9)), 0);
    }
}
