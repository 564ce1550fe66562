//! The state appenders share: the reservation word ([`State`]) that hands out bytes, LSNs and
//! tickets, and the publication ring ([`TicketSlot`]) where each ticket in flight records
//! where its entries end. The log owns both; the protocol that uses them is in `reserve.rs`.

use crate::format::ENTRY_ALIGN;
#[cfg(not(loom))]
pub(crate) use crate::format::MAX_INFLIGHT;
use crate::sync::atomic::{AtomicBool, AtomicU64};
use crate::sync::parking_lot;
use crate::Lsn;

/// Under the loom model checker, a ring of 2, so that three appenders fill it.
#[cfg(loom)]
pub(crate) const MAX_INFLIGHT: usize = 2;

/// Tickets in flight at most (the ring's size).
pub(crate) const INFLIGHT: usize = MAX_INFLIGHT;

/// The ticket field counts modulo `TICKET_MASK + 1`, which must exceed the ring (a blocked
/// state counts a full ring in flight).
#[cfg(not(loom))]
const TICKET_BITS: u32 = 12;
/// Under loom, 2 bits (counting modulo 4), so that a model can bring the reservation word back
/// to a value it held before (a suffix truncation sets the tail and the next LSN back) within
/// a few appends.
#[cfg(loom)]
const TICKET_BITS: u32 = 2;
const _: () = assert!(1u64 << TICKET_BITS > MAX_INFLIGHT as u64);
pub(crate) const TICKET_MASK: u64 = (1 << TICKET_BITS) - 1;
/// The tail is stored in 8-byte units: 44 bits cover every capacity up to 2^47 bytes.
const TAIL_UNITS_BITS: u32 = 44;

/// Nothing was ever stored at or after the tail (a new log's first lap): no end marker needed.
pub(crate) const FRESH: u8 = 1;
/// The session's slot carries `SLOT_CONCURRENT`.
pub(crate) const CONCURRENT: u8 = 4;
/// A truncation blocked reservations (the ticket field a full ring ahead). Reservers never
/// make a compare-and-swap from a state with this flag (they wait, as for a full ring), so
/// none succeeds against a blocked state: one would otherwise equal a state of a whole round
/// of tickets earlier with the same tail and next LSN (a suffix truncation sets them back),
/// or an earlier blocked state, which a reserver delayed since then may hold.
pub(crate) const BLOCKED: u8 = 2;

/// The reservation word, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// Offset just past the last reserved entry.
    pub tail: usize,
    /// Reservations made so far, modulo 2^12 (at most 16 are in flight).
    pub ticket: u64,
    pub flags: u8,
    /// The LSN the next reservation gets.
    pub next_lsn: Lsn,
}

impl State {
    pub(crate) fn new(tail: usize, next_lsn: Lsn, fresh: bool) -> Self {
        State {
            tail,
            ticket: 0,
            flags: if fresh { FRESH } else { 0 },
            next_lsn,
        }
    }

    /// This state blocked by a truncation: a full ring in flight, and [`BLOCKED`].
    pub(crate) fn blocked(self) -> Self {
        State {
            ticket: self.ticket + INFLIGHT as u64,
            flags: self.flags | BLOCKED,
            ..self
        }
    }

    /// This state with the ticket count of another and the given flags; `FRESH` is dropped
    /// (only a new log's first lap is fresh).
    pub(crate) fn with_ticket(self, ticket: u64, flags: u8) -> Self {
        State {
            ticket,
            flags: flags & CONCURRENT,
            ..self
        }
    }

    pub(crate) fn pack(self) -> u128 {
        debug_assert!(
            self.tail.is_multiple_of(ENTRY_ALIGN) && self.tail >> 3 < 1 << TAIL_UNITS_BITS
        );
        let lo = (self.tail as u64 >> 3)
            | (self.ticket & TICKET_MASK) << TAIL_UNITS_BITS
            | (self.flags as u64) << (TAIL_UNITS_BITS + TICKET_BITS);
        (self.next_lsn as u128) << 64 | lo as u128
    }

    pub(crate) fn unpack(v: u128) -> Self {
        let lo = v as u64;
        State {
            tail: ((lo & ((1 << TAIL_UNITS_BITS) - 1)) << 3) as usize,
            ticket: (lo >> TAIL_UNITS_BITS) & TICKET_MASK,
            flags: (lo >> (TAIL_UNITS_BITS + TICKET_BITS)) as u8,
            next_lsn: (v >> 64) as u64,
        }
    }

    /// The packed word with only flag `f` set.
    pub(crate) fn flag_bits(f: u8) -> u128 {
        ((f as u64) << (TAIL_UNITS_BITS + TICKET_BITS)) as u128
    }
}

/// A ticket's slot in the publication ring; one per cache-line pair, so that neighbouring
/// tickets of different threads do not share a line.
#[repr(align(128))]
pub(crate) struct TicketSlot {
    /// `ticket + 1` once ticket `ticket` is ready (durable, or stored in msync mode).
    pub(crate) ready: AtomicU64,
    /// `ticket + 1` once ticket `ticket` stored its end marker, or found it needs none. Only
    /// grows, as the slot is reused by later tickets.
    pub(crate) marker_done: AtomicU64,
    pub(crate) start: AtomicU64,
    pub(crate) end: AtomicU64,
    /// Where the entries before a wrap end, if this reservation wrapped; `NO_WRAP` otherwise.
    pub(crate) wrap_at: AtomicU64,
    pub(crate) next_lsn: AtomicU64,
    pub(crate) first_lsn: AtomicU64,
    /// Offsets of its entries the sparse index keeps (rare: one entry in `INDEX_STRIDE`).
    pub(crate) has_anchors: AtomicBool,
    pub(crate) anchors: parking_lot::Mutex<Vec<u64>>,
}

pub(crate) const NO_WRAP: u64 = u64::MAX;

impl TicketSlot {
    pub(crate) fn ring() -> Box<[TicketSlot]> {
        (0..MAX_INFLIGHT)
            .map(|_| TicketSlot {
                ready: AtomicU64::new(0),
                marker_done: AtomicU64::new(0),
                start: AtomicU64::new(0),
                end: AtomicU64::new(0),
                wrap_at: AtomicU64::new(NO_WRAP),
                next_lsn: AtomicU64::new(0),
                first_lsn: AtomicU64::new(0),
                has_anchors: AtomicBool::new(false),
                anchors: parking_lot::Mutex::new(Vec::new()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::DATA_OFFSET;

    #[test]
    fn state_packs_and_unpacks() {
        for s in [
            State::new(DATA_OFFSET, 1, true),
            State {
                tail: (1 << 46) - 8,
                ticket: TICKET_MASK,
                flags: FRESH | CONCURRENT,
                next_lsn: u64::MAX,
            },
            State {
                tail: 1 << 46,
                ticket: 5,
                flags: CONCURRENT,
                next_lsn: 42,
            },
        ] {
            assert_eq!(State::unpack(s.pack()), s);
        }
        let s = State::new(4096, 7, false);
        let with = State::unpack(s.pack() | State::flag_bits(CONCURRENT));
        assert_eq!(with.flags, CONCURRENT);
        assert_eq!((with.tail, with.next_lsn), (4096, 7));
    }
}
