//! One direction of a TCP connection, put back in order.
//!
//! Segments are delivered in sequence order to a callback; retransmitted and overlapping bytes
//! are delivered once; out-of-order segments wait in a buffer bounded by `max_buffer` bytes.
//! When the buffer is full (a segment was lost for good) or the stream ends, the missing
//! range is reported as a gap and delivery goes on after it.

use std::collections::BTreeMap;

/// What the stream hands to its consumer, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Data(&'a [u8]),
    Gap(u64),
}

#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of stream offset 0; `None` until the first SYN or data segment.
    base: Option<u32>,
    /// Offset of the next byte expected.
    next: u64,
    /// Out-of-order data by stream offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    pub packets: u64,
    pub bytes: u64,
    pub fin: bool,
    pub syn: bool,
}

impl Stream {
    pub fn started(&self) -> bool {
        self.base.is_some()
    }

    /// Memory held for out-of-order data.
    pub fn mem(&self) -> usize {
        self.pending_bytes + self.pending.len() * 48
    }

    /// A SYN: the stream's data starts at `seq + 1`.
    pub fn syn(&mut self, seq: u32) {
        if self.base.is_none() {
            self.base = Some(seq.wrapping_add(1));
            self.syn = true;
        }
    }

    /// Stream offset of `seq`, relative to the next expected byte (within ±2 GiB).
    fn offset(&self, base: u32, seq: u32) -> i64 {
        let expected = base.wrapping_add(self.next as u32);
        self.next as i64 + i64::from(seq.wrapping_sub(expected) as i32)
    }

    /// One segment's payload at `seq`.
    pub fn segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        max_buffer: usize,
        deliver: &mut dyn FnMut(Piece<'_>),
    ) {
        if payload.is_empty() {
            return;
        }
        let base = *self.base.get_or_insert(seq);
        let off = self.offset(base, seq);
        let end = off + payload.len() as i64;
        if end <= self.next as i64 {
            return; // a retransmission of bytes already delivered
        }
        if off <= self.next as i64 {
            let skip = (self.next as i64 - off) as usize;
            let fresh = &payload[skip..];
            self.next += fresh.len() as u64;
            deliver(Piece::Data(fresh));
            self.drain(deliver);
            return;
        }
        let off = off as u64;
        // Keep the longer copy when the same offset arrives twice.
        let keep = self
            .pending
            .get(&off)
            .is_none_or(|have| have.len() < payload.len());
        if keep {
            if let Some(old) = self.pending.insert(off, payload.to_vec()) {
                self.pending_bytes -= old.len();
            }
            self.pending_bytes += payload.len();
        }
        while self.pending_bytes > max_buffer {
            self.skip_to_first(deliver);
        }
    }

    /// Delivers buffered segments that became contiguous.
    fn drain(&mut self, deliver: &mut dyn FnMut(Piece<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let off = *entry.key();
            if off > self.next {
                return;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            let end = off + data.len() as u64;
            if end > self.next {
                let skip = (self.next - off) as usize;
                self.next = end;
                deliver(Piece::Data(&data[skip..]));
            }
        }
    }

    /// Gives up on the missing bytes before the first buffered segment.
    fn skip_to_first(&mut self, deliver: &mut dyn FnMut(Piece<'_>)) {
        if let Some((&off, _)) = self.pending.first_key_value() {
            if off > self.next {
                deliver(Piece::Gap(off - self.next));
                self.next = off;
            }
            self.drain(deliver);
        }
    }

    /// The stream ends: whatever is buffered is delivered, with the gaps before it.
    pub fn flush(&mut self, deliver: &mut dyn FnMut(Piece<'_>)) {
        while !self.pending.is_empty() {
            self.skip_to_first(deliver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(s: &mut Stream, segs: &[(u32, &[u8])], max: usize) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut gaps = 0;
        let mut f = |p: Piece<'_>| match p {
            Piece::Data(d) => out.extend_from_slice(d),
            Piece::Gap(n) => gaps += n,
        };
        for (seq, data) in segs {
            s.segment(*seq, data, max, &mut f);
        }
        s.flush(&mut f);
        (out, gaps)
    }

    #[test]
    fn in_order_reordered_and_overlapping() {
        let mut s = Stream::default();
        s.syn(99);
        let (out, gaps) = collect(
            &mut s,
            &[
                (100, b"hel"),
                (106, b"world"),
                (103, b"lo "),
                (100, b"hello"),
                (105, b" wor"),
            ],
            1 << 20,
        );
        assert_eq!(out, b"hello world");
        assert_eq!(gaps, 0);
    }

    #[test]
    fn sequence_wraps() {
        let mut s = Stream::default();
        s.syn(u32::MAX - 2);
        let (out, _) = collect(
            &mut s,
            &[(u32::MAX - 1, b"ab"), (0, b"cd"), (2, b"ef")],
            1 << 20,
        );
        assert_eq!(out, b"abcdef");
    }

    #[test]
    fn a_lost_segment_becomes_a_gap_when_the_buffer_fills() {
        let mut s = Stream::default();
        s.syn(0);
        let mut events = Vec::new();
        let mut f = |p: Piece<'_>| {
            events.push(match p {
                Piece::Data(d) => format!("data {}", d.len()),
                Piece::Gap(n) => format!("gap {n}"),
            })
        };
        s.segment(1, &[1; 10], 25, &mut f);
        // bytes 10..20 are lost; later segments wait until the buffer is over its cap
        s.segment(21, &[2; 10], 25, &mut f);
        s.segment(31, &[3; 10], 25, &mut f);
        s.segment(41, &[4; 10], 25, &mut f);
        assert_eq!(
            events,
            ["data 10", "gap 10", "data 10", "data 10", "data 10"]
        );
        assert_eq!(s.mem(), 0);
    }

    proptest! {
        /// Any permutation and duplication of the segments of a stream reassembles to the
        /// original bytes, with a buffer large enough to hold them all.
        #[test]
        fn any_order_reassembles(
            data in proptest::collection::vec(any::<u8>(), 1..2000),
            cuts in proptest::collection::vec(1usize..200, 1..40),
            order in proptest::collection::vec(any::<u32>(), 0..80),
            isn in any::<u32>(),
        ) {
            let mut segs = Vec::new();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= data.len() { break; }
                let end = (at + c).min(data.len());
                segs.push((isn.wrapping_add(1).wrapping_add(at as u32), &data[at..end]));
                at = end;
            }
            let n = segs.len();
            let mut shuffled: Vec<(u32, &[u8])> = Vec::new();
            // The first segment comes first (it fixes the start); the others in any order, some twice.
            shuffled.push(segs[0]);
            for (i, o) in order.iter().enumerate() {
                if n > 1 { shuffled.push(segs[1 + (*o as usize + i) % (n - 1)]); }
            }
            shuffled.extend(segs.iter().copied());
            let mut s = Stream::default();
            s.syn(isn);
            let (out, gaps) = collect(&mut s, &shuffled, 1 << 20);
            prop_assert_eq!(gaps, 0);
            prop_assert_eq!(out, data);
        }

        /// With a small buffer, memory stays under the cap whatever arrives.
        #[test]
        fn buffer_stays_bounded(
            segs in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 1..600)), 1..60),
        ) {
            let mut s = Stream::default();
            let mut f = |_p: Piece<'_>| {};
            for (seq, d) in &segs {
                s.segment(*seq, d, 1000, &mut f);
                prop_assert!(s.pending_bytes <= 1000);
            }
        }
    }
}
