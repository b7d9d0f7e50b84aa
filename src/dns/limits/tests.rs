use std::time::Duration;

use super::*;

const LIMIT: RateLimit = RateLimit {
    per_second: 10,
    burst: 5,
};

fn ip(i: u32) -> IpAddr {
    IpAddr::from(i.to_be_bytes())
}

fn allowed(limiter: &SourceLimiter, source: IpAddr, now: Instant, n: usize) -> usize {
    (0..n)
        .filter(|_| limiter.check(source, now).allowed)
        .count()
}

#[test]
fn burst_then_refused_then_refilled_at_the_rate() {
    let limiter = SourceLimiter::new(LIMIT);
    let t0 = Instant::now();
    assert_eq!(allowed(&limiter, ip(1), t0, 20), 5);
    // 10 per second: after 300 ms three more.
    assert_eq!(
        allowed(&limiter, ip(1), t0 + Duration::from_millis(300), 20),
        3
    );
    // Idle for long: never more than the burst.
    assert_eq!(
        allowed(&limiter, ip(1), t0 + Duration::from_secs(60), 20),
        5
    );
}

#[test]
fn sources_are_limited_separately_and_mapped_v4_is_v4() {
    let limiter = SourceLimiter::new(LIMIT);
    let t0 = Instant::now();
    let v4: IpAddr = "10.0.0.1".parse().expect("ip");
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
    assert_eq!(allowed(&limiter, v4, t0, 3), 3);
    assert_eq!(
        allowed(&limiter, mapped, t0, 10),
        2,
        "same source, same bucket"
    );
    assert_eq!(allowed(&limiter, ip(2), t0, 10), 5);
}

#[test]
fn table_never_grows_past_its_capacity() {
    let limiter = SourceLimiter::new(LIMIT);
    assert_eq!(limiter.capacity(), SOURCE_TABLE_CAPACITY);
    // The whole table, allocated at start: the bound docs/dns.md states.
    let bytes = std::mem::size_of::<Option<Entry>>() * SOURCE_TABLE_CAPACITY;
    assert!(bytes <= 512 * 1024, "{bytes} bytes");
    let t0 = Instant::now();
    // A spoofed flood: far more distinct sources than entries, every one a first query.
    for i in 0..(SOURCE_TABLE_CAPACITY as u32 * 8) {
        assert!(
            limiter.check(ip(i), t0).allowed,
            "a new source gets its burst"
        );
    }
    assert!(limiter.len() <= SOURCE_TABLE_CAPACITY);
    assert!(
        limiter.len() > SOURCE_TABLE_CAPACITY / 2,
        "{}",
        limiter.len()
    );
    assert_eq!(limiter.capacity(), SOURCE_TABLE_CAPACITY);
    // IPv6 sources too.
    for i in 0..(SOURCE_TABLE_CAPACITY as u128 * 2) {
        limiter.check(IpAddr::from((0xfd00_u128 << 112 | i).to_be_bytes()), t0);
    }
    assert!(limiter.len() <= SOURCE_TABLE_CAPACITY);
}

#[test]
fn idle_sources_make_room_before_a_limited_one_is_forgotten() {
    let limiter = SourceLimiter::small(
        RateLimit {
            per_second: 1,
            burst: 5,
        },
        4,
    );
    let t0 = Instant::now();
    let hot = ip(100);
    assert_eq!(allowed(&limiter, hot, t0, 5), 5);
    for i in 1..=3 {
        assert!(limiter.check(ip(i), t0).allowed);
    }
    // One second later the three others are full again (idle), the hot source has one token.
    let t1 = t0 + Duration::from_secs(1);
    let newcomer = limiter.check(ip(50), t1);
    assert_eq!(
        newcomer,
        Verdict {
            allowed: true,
            evicted: false
        }
    );
    assert_eq!(limiter.len(), 4);
    assert_eq!(
        allowed(&limiter, hot, t1, 5),
        1,
        "the hot source kept its state"
    );

    // With no idle entry left, the least recently charged source is dropped and counted.
    let mut evictions = 0;
    for i in 200..204 {
        evictions += usize::from(limiter.check(ip(i), t1).evicted);
    }
    assert!(evictions > 0);
    assert_eq!(limiter.len(), 4);
}

#[test]
fn slots_per_source_and_in_total() {
    let pool = SlotPool::new(4, 2);
    let a1 = pool.try_acquire(ip(1)).expect("a1");
    let _a2 = pool.try_acquire(ip(1)).expect("a2");
    assert_eq!(pool.try_acquire(ip(1)).err(), Some(SlotDenied::Source));
    let _b1 = pool.try_acquire(ip(2)).expect("b1");
    let _c1 = pool.try_acquire(ip(3)).expect("c1");
    assert_eq!(pool.try_acquire(ip(4)).err(), Some(SlotDenied::Exhausted));
    assert_eq!(pool.usage(), (4, 3));
    drop(a1);
    let _d1 = pool.try_acquire(ip(4)).expect("d1 after a1 returned");
    assert_eq!(pool.usage(), (4, 4));
}

#[test]
fn slot_pool_holds_no_entry_for_sources_without_a_slot() {
    let pool = SlotPool::new(8, 2);
    let mut held = Vec::new();
    for i in 0..10_000 {
        match pool.try_acquire(ip(i)) {
            Ok(slot) => held.push(slot),
            Err(e) => assert_eq!(e, SlotDenied::Exhausted),
        }
        assert!(pool.usage().1 <= 8);
    }
    drop(held);
    assert_eq!(pool.usage(), (0, 0));
}
