//! The tower integration: [`Balance`] over endpoint services fed by a `Discover` stream.
//!
//! Time-dependent tests run on tokio's paused clock (`start_paused`): sleeps complete instantly
//! in simulated time, and the balancer reads that clock through `with_clock`, so latencies are
//! exact and nothing depends on the machine's speed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use novaedge_lb::{
    Balance, BuildOptions, EndpointSet, HashPolicy, LbPolicy, NoEndpoint, PeerAddr, Weighted,
    discover,
};
use tokio::sync::Notify;
use tower::discover::Change;
use tower::{Service, ServiceExt, service_fn};

type Endpoint = tower::util::BoxCloneSyncService<String, String, Infallible>;

/// An endpoint that answers its name after `delay`.
fn endpoint(name: &'static str, delay: Duration) -> Endpoint {
    tower::util::BoxCloneSyncService::new(service_fn(move |_req: String| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(name.to_owned())
    }))
}

fn tokio_clock() -> impl Fn() -> Instant + Clone {
    || tokio::time::Instant::now().into_std()
}

async fn call<S: Service<String, Response = String>>(svc: &mut S) -> Result<String, S::Error> {
    svc.ready().await?.call("req".to_owned()).await
}

#[tokio::test]
async fn balances_over_a_discovered_set() {
    let set = EndpointSet::with_options(LbPolicy::RoundRobin, BuildOptions::seeded(1));
    let changes = futures_util::stream::iter(
        ["a", "b", "c"]
            .map(|n| Ok::<_, Infallible>(Change::Insert(n, endpoint(n, Duration::ZERO)))),
    );
    discover(set.clone(), changes).await.unwrap();
    let mut balance = Balance::new(set.clone());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts.entry(call(&mut balance).await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        counts,
        HashMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)])
    );

    // A removal from the stream: "b" gets nothing more.
    let removal = Change::<_, Endpoint>::Remove("b");
    discover(
        set.clone(),
        futures_util::stream::iter([Ok::<_, Infallible>(removal)]),
    )
    .await
    .unwrap();
    for _ in 0..10 {
        assert_ne!(call(&mut balance).await.unwrap(), "b");
    }
}

#[tokio::test]
async fn weighted_services_from_the_stream() {
    let set: EndpointSet<&str, Endpoint> =
        EndpointSet::with_options(LbPolicy::RoundRobin, BuildOptions::seeded(1));
    let changes = futures_util::stream::iter([
        Ok::<_, Infallible>(Change::Insert(
            "a",
            Weighted::new(endpoint("a", Duration::ZERO), 3),
        )),
        Ok(Change::Insert(
            "b",
            Weighted::new(endpoint("b", Duration::ZERO), 1),
        )),
    ]);
    discover(set.clone(), changes).await.unwrap();
    let mut balance = Balance::new(set);
    let mut a = 0;
    for _ in 0..40 {
        a += usize::from(call(&mut balance).await.unwrap() == "a");
    }
    assert_eq!(a, 30);
}

#[tokio::test]
async fn discovery_errors_end_the_driver_after_applying_what_came_before() {
    let set: EndpointSet<&str, Endpoint> = EndpointSet::new(LbPolicy::RoundRobin);
    let changes = futures_util::stream::iter([
        Ok(Change::Insert("a", endpoint("a", Duration::ZERO))),
        Err("watch failed"),
    ]);
    assert_eq!(discover(set.clone(), changes).await, Err("watch failed"));
    assert_eq!(set.len(), 1);
}

#[tokio::test]
async fn an_empty_set_fails_fast() {
    let set: EndpointSet<&str, Endpoint> = EndpointSet::new(LbPolicy::least_request());
    let mut balance = Balance::new(set.clone());
    let err = call(&mut balance).await.unwrap_err();
    assert!(err.is::<NoEndpoint>(), "{err}");
    // Every endpoint unhealthy, panic mode disabled: no endpoint either.
    set.set_policy(
        LbPolicy::least_request(),
        BuildOptions::new().with_panic_threshold(0),
    );
    set.insert("a", endpoint("a", Duration::ZERO), 1);
    set.set_healthy(&"a", false);
    assert!(call(&mut balance).await.unwrap_err().is::<NoEndpoint>());
    // With the default 50% threshold the set panics and uses "a" anyway.
    set.set_policy(LbPolicy::least_request(), BuildOptions::new());
    assert_eq!(call(&mut balance).await.unwrap(), "a");
}

#[tokio::test(start_paused = true)]
async fn removing_an_endpoint_does_not_disrupt_its_requests_in_flight() {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let slow = tower::util::BoxCloneSyncService::new(service_fn(move |_req: String| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            Ok::<_, Infallible>("old".to_owned())
        }
    }));
    let set = EndpointSet::new(LbPolicy::RoundRobin);
    set.insert("old", slow, 1);
    let balance = Balance::new(set.clone()).with_clock(tokio_clock());
    let in_flight = tokio::spawn({
        let mut balance = balance.clone();
        async move { call(&mut balance).await }
    });
    tokio::task::yield_now().await;
    let old_state = set.state(&"old").unwrap();
    assert_eq!(old_state.pending(), 1);

    // Replace the endpoint while its request is in flight.
    set.replace([("new", endpoint("new", Duration::ZERO), 1)]);
    assert_eq!(call(&mut balance.clone()).await.unwrap(), "new");
    release.notify_one();
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        "old",
        "the old request finished"
    );
    assert_eq!(
        old_state.pending(),
        0,
        "and was counted out of its endpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn records_requests_in_flight_and_their_latency() {
    let set = EndpointSet::new(LbPolicy::peak_ewma());
    set.insert("a", endpoint("a", Duration::from_millis(20)), 1);
    let balance = Balance::new(set.clone()).with_clock(tokio_clock());
    let state = set.state(&"a").unwrap();
    let request = tokio::spawn({
        let mut balance = balance.clone();
        async move { call(&mut balance).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(state.pending(), 1);
    assert_eq!(state.rtt_estimate(tokio_clock()()), None);
    request.await.unwrap().unwrap();
    assert_eq!(state.pending(), 0);
    assert_eq!(
        state.rtt_estimate(tokio_clock()()),
        Some(Duration::from_millis(20))
    );
    // Errors count out of the load but leave no latency sample.
    let failing = tower::util::BoxCloneSyncService::new(service_fn(|_req: String| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Err::<String, _>("refused")
    }));
    let set = EndpointSet::new(LbPolicy::peak_ewma());
    set.insert("down", failing, 1);
    let mut balance = Balance::new(set.clone()).with_clock(tokio_clock());
    assert!(call(&mut balance).await.is_err());
    let state = set.state(&"down").unwrap();
    assert_eq!(state.pending(), 0);
    assert_eq!(state.rtt_estimate(tokio_clock()()), None);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_steers_away_from_a_slow_service() {
    let set = EndpointSet::with_options(LbPolicy::peak_ewma(), BuildOptions::seeded(3));
    set.insert("slow", endpoint("slow", Duration::from_millis(50)), 1);
    for name in ["f1", "f2", "f3"] {
        set.insert(name, endpoint(name, Duration::from_millis(5)), 1);
    }
    let balance = Balance::new(set).with_clock(tokio_clock());
    // Four concurrent callers, 250 requests each.
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut balance = balance.clone();
            tokio::spawn(async move {
                let mut slow = 0;
                for _ in 0..250 {
                    slow += usize::from(call(&mut balance).await.unwrap() == "slow");
                }
                slow
            })
        })
        .collect();
    let mut slow = 0;
    for caller in callers {
        slow += caller.await.unwrap();
    }
    // Round robin would send it 250 of 1,000. Once measured, "slow" wins only when every draw
    // is "slow" (under 1/16, as repeated draws are redrawn); its first requests, before it has
    // a sample, add a few.
    assert!(slow < 100, "slow endpoint got {slow} of 1000");
}

#[tokio::test]
async fn hash_policy_pins_requests_to_endpoints() {
    let set = EndpointSet::new(LbPolicy::maglev());
    for name in ["a", "b", "c", "d"] {
        let svc = tower::util::BoxCloneSyncService::new(service_fn(
            move |_req: http::Request<()>| async move { Ok::<_, Infallible>(name) },
        ));
        set.insert(name, svc, 1);
    }
    let policy = HashPolicy::Header(http::HeaderName::from_static("x-user"));
    let mut balance = Balance::new(set.clone()).with_hash(policy);
    let request = |user: &str| {
        http::Request::get("/")
            .header("x-user", user)
            .body(())
            .unwrap()
    };
    let mut owners = HashMap::new();
    for user in (0..40).map(|i| format!("user-{i}")) {
        let first = balance
            .ready()
            .await
            .unwrap()
            .call(request(&user))
            .await
            .unwrap();
        for _ in 0..3 {
            let again = balance
                .ready()
                .await
                .unwrap()
                .call(request(&user))
                .await
                .unwrap();
            assert_eq!(again, first, "{user} moved");
        }
        owners.insert(user, first);
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert_eq!(distinct.len(), 4, "40 users over 4 endpoints: {owners:?}");

    // Source IP hashing reads the PeerAddr extension.
    let mut by_ip = Balance::new(set).with_hash(HashPolicy::SourceIp);
    let from = |ip: &str| {
        let mut req = request("x");
        req.extensions_mut()
            .insert(PeerAddr(format!("{ip}:40000").parse().unwrap()));
        req
    };
    let first = by_ip
        .ready()
        .await
        .unwrap()
        .call(from("192.0.2.1"))
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            by_ip
                .ready()
                .await
                .unwrap()
                .call(from("192.0.2.1"))
                .await
                .unwrap(),
            first
        );
    }
}
