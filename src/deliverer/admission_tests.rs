use super::*;

/// A host whose one finished request took `took`.
fn host_that_took(took: Duration) -> Host {
    let host = Host::new(32);
    host.observe(took);
    host
}

const LIMITS: Limits = Limits { in_flight_total: 256, in_flight: 32, claimable: 512, lease: Duration::from_secs(35) };

#[test]
fn a_host_gets_twice_its_in_flight_limit_claimed_until_its_pace_is_known() {
    assert_eq!(Host::new(32).claim_limit(LIMITS, 1), 64);
}

#[test]
fn a_fast_host_alone_gets_up_to_eight_times_its_in_flight_limit_within_half_the_claim_cap_and_a_slow_one_twice() {
    let fast = host_that_took(Duration::from_millis(2));
    assert_eq!(fast.claim_limit(LIMITS, 1), 256, "eight times 32");
    assert_eq!(fast.claim_limit(Limits { claimable: 10_000, ..LIMITS }, 1), 256, "eight times 32");
    assert_eq!(fast.claim_limit(Limits { claimable: 200, ..LIMITS }, 1), 100, "half the cap");
    assert_eq!(fast.claim_limit(Limits { claimable: 100, ..LIMITS }, 1), 50, "half the cap, under twice 32");
    let slow = host_that_took(Duration::from_secs(5));
    assert_eq!(slow.claim_limit(LIMITS, 1), 64);
}

#[test]
fn a_fast_host_among_busy_ones_gets_only_its_share_of_the_claim_cap_leaving_one_for_a_host_with_none_claimed() {
    let fast = host_that_took(Duration::from_millis(2));
    assert_eq!(fast.claim_limit(LIMITS, 2), 170, "a third of 512");
    assert_eq!(fast.claim_limit(LIMITS, 3), 128, "a quarter");
    assert_eq!(fast.claim_limit(LIMITS, 10), 46, "an eleventh, under twice 32");
}

#[test]
fn a_host_claims_as_many_as_it_gets_through_in_a_quarter_of_the_lease() {
    let host = host_that_took(Duration::from_secs(3));
    // 32 at a time, 3 s each: 93 in 8.75 s (a quarter of 35 s).
    assert_eq!(host.claim_limit(LIMITS, 1), 93);
}

#[test]
fn a_host_that_turns_slow_loses_its_larger_limit_within_a_few_requests() {
    let host = host_that_took(Duration::from_millis(1));
    assert_eq!(host.claim_limit(LIMITS, 1), 256);
    for _ in 0..3 {
        host.observe(Duration::from_secs(5));
    }
    assert_eq!(host.claim_limit(LIMITS, 1), 64);
    host.observe(Duration::from_millis(1));
    assert!(host.claim_limit(LIMITS, 1) < 80, "one fast answer does not undo it");
}

#[test]
fn a_dropped_ticket_gives_back_its_place_in_the_claim_cap_and_its_host() {
    let admission = Admission::new(Limits::new(2, 1, Duration::from_secs(35)));
    assert_eq!(admission.free(), 4, "twice the requests in flight");
    let tickets: Vec<_> = (0..4).map(|_| admission.admit("a.example").expect("room")).collect();
    assert!(admission.admit("b.example").is_none(), "the claim cap is used up");
    assert_eq!(admission.rooms().saturated, vec!["a.example".to_owned()]);
    drop(tickets);
    assert_eq!(admission.free(), 4);
    assert_eq!(admission.busy_hosts.load(Ordering::Relaxed), 0);
    assert!(admission.rooms().saturated.is_empty(), "a host with nothing claimed is not saturated");
}

#[test]
fn a_host_below_its_claim_limit_gets_what_it_leaves_and_an_unknown_host_one_in_flight_limit() {
    let admission = Admission::new(Limits::new(16, 4, Duration::from_secs(35)));
    let _ticket = admission.admit("a.example").expect("room");
    let rooms = admission.rooms();
    assert_eq!(rooms.per_host, 4);
    assert_eq!((rooms.hosts, rooms.rooms), (vec!["a.example".to_owned()], vec![7]), "twice 4, less the one claimed");
}

#[tokio::test]
async fn a_ticket_starts_only_while_its_host_has_a_free_permit() {
    let admission = Admission::new(Limits::new(8, 1, Duration::from_secs(35)));
    let (first, second) = (admission.admit("a.example").unwrap(), admission.admit("a.example").unwrap());
    let running = first.start().await;
    let waiting = tokio::time::timeout(Duration::from_millis(50), second.start()).await;
    assert!(waiting.is_err(), "one request at a time to a host with an in-flight limit of one");
    drop(running);
    tokio::time::timeout(Duration::from_secs(1), second.start()).await.expect("starts once the first is done");
}
