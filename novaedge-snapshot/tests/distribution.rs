//! The snapshot distribution service over a real gRPC connection on 127.0.0.1: what is sent
//! when, resumption by digest, ACK/NACK and heartbeat reports, per-node snapshots and
//! authorization, and the agent side reconnecting after the controller restarts.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use novaedge_snapshot::distribution::proto::snapshot_distribution_client::SnapshotDistributionClient;
use novaedge_snapshot::distribution::proto::{
    Ack, AgentMessage, ControllerMessage, Heartbeat, Hello, Nack, agent_message,
};
use novaedge_snapshot::distribution::{
    Applier, Authorize, Backoff, Contact, Publisher, PublisherConfig, Subscriber, SubscriberConfig,
    digest,
};
use novaedge_snapshot::{ConfigSnapshot, Listener, ListenerProtocol};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Endpoint, Server};
use tonic::{Status, Streaming};

fn snapshot(port: u16) -> ConfigSnapshot {
    ConfigSnapshot {
        version: 0,
        listeners: vec![Listener {
            name: format!("http-{port}"),
            bind: None,
            port,
            protocol: ListenerProtocol::Http,
            tls: None,
            https_redirect_port: None,
        }],
        routes: Vec::new(),
        backends: Vec::new(),
        vips: Vec::new(),
    }
}

fn allow_all() -> Authorize {
    Arc::new(|_: &tonic::Request<()>, _: &str| Ok(()))
}

/// Serves `publisher` on 127.0.0.1; the server stops when the returned sender is dropped or
/// fired.
async fn serve(
    publisher: &Publisher,
    authorize: Authorize,
    at: Option<SocketAddr>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind(at.unwrap_or(([127, 0, 0, 1], 0).into()))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = publisher.service(authorize);
    tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// A hand-driven agent: the raw stream, to see exactly what the controller sends.
struct RawAgent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ControllerMessage>,
}

impl RawAgent {
    async fn connect(addr: SocketAddr, hello: Hello) -> Result<RawAgent, Status> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.send(message(agent_message::Message::Hello(hello)))
            .await
            .unwrap();
        let inbound = SnapshotDistributionClient::new(channel)
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(RawAgent { tx, inbound })
    }

    async fn next(&mut self) -> ControllerMessage {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("a snapshot within 10 s")
            .expect("the stream is healthy")
            .expect("the stream is open")
    }

    /// Asserts nothing arrives for a while.
    async fn nothing(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(300), self.inbound.message()).await;
        assert!(got.is_err(), "unexpected message: {got:?}");
    }

    async fn say(&self, m: agent_message::Message) {
        self.tx.send(message(m)).await.unwrap();
    }
}

fn message(m: agent_message::Message) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

fn hello(node: &str) -> Hello {
    Hello {
        node: node.into(),
        current_version: 0,
        current_digest: Vec::new(),
        agent_version: "test".into(),
        held_vips: Vec::new(),
    }
}

/// Polls `publisher`'s report of `node` until `check` holds.
async fn wait_report(
    publisher: &Publisher,
    node: &str,
    check: impl Fn(&novaedge_snapshot::distribution::NodeReport) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if publisher.reports().get(node).is_some_and(&check) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "report of {node}: {:?}",
            publisher.reports().get(node)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sends_only_changes_and_records_acks_nacks_and_heartbeats() {
    let publisher = Publisher::new(Duration::from_millis(250));
    let v1 = publisher.publish_default(&snapshot(8080)).unwrap();
    // The same content again is no change.
    assert_eq!(publisher.publish_default(&snapshot(8080)), None);
    let (addr, _stop) = serve(&publisher, allow_all(), None).await;

    let mut agent = RawAgent::connect(addr, hello("a")).await.unwrap();
    let first = agent.next().await;
    let wire = first.snapshot.clone().unwrap();
    assert_eq!(wire.version, v1);
    assert_eq!(first.heartbeat_interval_ms, 250);
    let decoded = ConfigSnapshot::try_from(wire).unwrap();
    assert_eq!(first.digest, digest(&decoded).to_vec());
    agent.nothing().await;

    agent
        .say(agent_message::Message::Ack(Ack { version: v1 }))
        .await;
    agent
        .say(agent_message::Message::Heartbeat(Heartbeat {
            ready: true,
            ..Heartbeat::default()
        }))
        .await;
    wait_report(&publisher, "a", |r| {
        r.connected && r.acked == Some(v1) && r.sent == Some(v1) && r.ready
    })
    .await;

    // A change is sent with a higher version; a NACK is recorded with its reason.
    let v2 = publisher.publish_default(&snapshot(8081)).unwrap();
    assert!(v2 > v1);
    assert_eq!(agent.next().await.snapshot.unwrap().version, v2);
    agent
        .say(agent_message::Message::Nack(Nack {
            version: v2,
            error: "port 8081 is taken".into(),
        }))
        .await;
    wait_report(&publisher, "a", |r| {
        r.acked == Some(v1) && r.nacked == Some((v2, "port 8081 is taken".into()))
    })
    .await;

    // The metrics count what happened.
    let mut registry = prometheus_client::registry::Registry::default();
    publisher.register_metrics(&mut registry);
    let metrics = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    let text = metrics();
    for line in [
        "novaedge_config_pushes_total{result=\"ack\"} 1",
        "novaedge_config_pushes_total{result=\"nack\"} 1",
        "novaedge_snapshots_sent_total 2",
        "novaedge_agents_connected 1",
        &format!("novaedge_snapshot_version {v2}"),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    // The stream ends: the node is reported disconnected.
    drop(agent);
    wait_report(&publisher, "a", |r| !r.connected).await;
    assert!(
        metrics()
            .lines()
            .any(|l| l == "novaedge_agents_connected 0")
    );
}

#[tokio::test]
async fn an_agent_that_runs_the_current_content_gets_nothing() {
    let publisher = Publisher::new(Duration::from_secs(1));
    let running = snapshot(8080);
    publisher.publish_default(&running).unwrap();
    let (addr, _stop) = serve(&publisher, allow_all(), None).await;

    // As after a controller restart: the agent runs the same content under another version.
    let mut agent = RawAgent::connect(
        addr,
        Hello {
            current_version: 42,
            current_digest: digest(&running).to_vec(),
            ..hello("a")
        },
    )
    .await
    .unwrap();
    agent.nothing().await;
    publisher.publish_default(&snapshot(9090)).unwrap();
    assert_eq!(agent.next().await.snapshot.unwrap().listeners[0].port, 9090);
}

#[tokio::test]
async fn per_node_snapshots_override_the_default() {
    let publisher = Publisher::new(Duration::from_secs(1));
    publisher.publish_default(&snapshot(8080)).unwrap();
    publisher.publish_node("b", &snapshot(9090)).unwrap();
    let (addr, _stop) = serve(&publisher, allow_all(), None).await;

    let mut a = RawAgent::connect(addr, hello("a")).await.unwrap();
    let mut b = RawAgent::connect(addr, hello("b")).await.unwrap();
    let port = |m: ControllerMessage| m.snapshot.unwrap().listeners[0].port;
    assert_eq!(port(a.next().await), 8080);
    assert_eq!(port(b.next().await), 9090);

    // A change of b's snapshot concerns b only; removing it gives b the default.
    publisher.publish_node("b", &snapshot(9091)).unwrap();
    assert_eq!(port(b.next().await), 9091);
    a.nothing().await;
    publisher.remove_node("b");
    assert_eq!(port(b.next().await), 8080);
    a.nothing().await;
}

#[tokio::test]
async fn streams_are_authorized_per_node() {
    let publisher = Publisher::new(Duration::from_secs(1));
    publisher.publish_default(&snapshot(8080)).unwrap();
    let only_a: Authorize = Arc::new(|_: &tonic::Request<()>, node: &str| {
        if node == "a" {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("not {node}")))
        }
    });
    let (addr, _stop) = serve(&publisher, only_a, None).await;
    assert!(RawAgent::connect(addr, hello("a")).await.is_ok());
    let refused = match RawAgent::connect(addr, hello("b")).await {
        Ok(mut agent) => agent.inbound.message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused.message(), "not b");
    assert!(!publisher.reports().contains_key("b"));

    // A first message that is not a Hello is refused too.
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(1);
    tx.send(message(agent_message::Message::Ack(Ack { version: 1 })))
        .await
        .unwrap();
    let status = match SnapshotDistributionClient::new(channel)
        .subscribe(ReceiverStream::new(rx))
        .await
    {
        Ok(response) => response.into_inner().message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// Records what it applies; refuses snapshots with a listener on port 1.
#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<Vec<(u64, u16)>>>,
    current: Arc<Mutex<(u64, Vec<u8>)>>,
}

impl Applier for Recorder {
    fn apply(&mut self, snapshot: ConfigSnapshot, digest: Vec<u8>) -> Result<(), String> {
        let port = snapshot.listeners[0].port;
        if port == 1 {
            return Err("port 1 is privileged".into());
        }
        self.applied.lock().unwrap().push((snapshot.version, port));
        *self.current.lock().unwrap() = (snapshot.version, digest);
        Ok(())
    }

    fn current(&self) -> (u64, Vec<u8>) {
        self.current.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_subscriber_applies_nacks_and_resumes_after_a_controller_restart() {
    let publisher = Publisher::new(Duration::from_millis(100));
    let v1 = publisher.publish_default(&snapshot(8080)).unwrap();
    let (addr, stop) = serve(&publisher, allow_all(), None).await;
    let recorder = Recorder::default();
    let subscriber = Subscriber::new(
        SubscriberConfig {
            endpoint: Endpoint::from_shared(format!("http://{addr}")).unwrap(),
            node: "a".into(),
            agent_version: "test".into(),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
        },
        recorder.clone(),
    );
    let task = tokio::spawn(subscriber.run());
    wait_report(&publisher, "a", |r| r.acked == Some(v1) && r.ready).await;

    let refused = publisher.publish_default(&snapshot(1)).unwrap();
    wait_report(&publisher, "a", |r| {
        r.nacked
            .as_ref()
            .is_some_and(|(v, why)| *v == refused && why == "port 1 is privileged")
    })
    .await;
    assert_eq!(recorder.applied.lock().unwrap().clone(), [(v1, 8080)]);

    // The controller restarts with a fresh publisher holding the content the agent runs: the
    // agent reconnects and is sent nothing; then a real change arrives.
    publisher.close();
    let _ = stop.send(());
    let restarted = Publisher::new(Duration::from_millis(100));
    restarted.publish_default(&snapshot(8080)).unwrap();
    let (_addr, _stop) = loop {
        // The old server may take a moment to release the port.
        match tokio::net::TcpListener::bind(addr).await {
            Ok(probe) => {
                drop(probe);
                break serve(&restarted, allow_all(), Some(addr)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    wait_report(&restarted, "a", |r| r.connected && r.ready).await;
    assert_eq!(restarted.reports()["a"].sent, None, "nothing resent");
    let v3 = restarted.publish_default(&snapshot(8082)).unwrap();
    wait_report(&restarted, "a", |r| r.acked == Some(v3)).await;
    assert_eq!(
        recorder.applied.lock().unwrap().clone(),
        [(v1, 8080), (v3, 8082)]
    );
    task.abort();
}

fn beat(sequence: u64, held: &[&str]) -> agent_message::Message {
    agent_message::Message::Heartbeat(Heartbeat {
        ready: true,
        sequence,
        held_vips: held.iter().map(|h| (*h).to_owned()).collect(),
    })
}

#[tokio::test]
async fn heartbeats_are_answered_in_order_and_never_before_a_pending_snapshot() {
    let publisher = Publisher::with_config(PublisherConfig {
        heartbeat: Duration::from_millis(250),
        fencing_delay: Some(Duration::from_millis(1500)),
    });
    let v1 = publisher.publish_default(&snapshot(8080)).unwrap();
    let (addr, _stop) = serve(&publisher, allow_all(), None).await;

    let mut agent = RawAgent::connect(
        addr,
        Hello {
            held_vips: vec!["web".into()],
            ..hello("a")
        },
    )
    .await
    .unwrap();
    let first = agent.next().await;
    assert_eq!(first.snapshot.unwrap().version, v1);
    assert_eq!(first.fencing_delay_ms, 1500);
    assert_eq!(first.heartbeat_ack, 0);
    // The Hello's claims are in the report at once.
    assert_eq!(publisher.reports()["a"].held_vips, ["web"]);

    agent.say(beat(1, &["web", "api"])).await;
    let answer = agent.next().await;
    assert_eq!(answer.heartbeat_ack, 1);
    assert!(answer.snapshot.is_none());
    assert_eq!(answer.fencing_delay_ms, 1500);
    wait_report(&publisher, "a", |r| r.held_vips == ["web", "api"]).await;

    // A heartbeat that arrives after a change is answered with or after the new snapshot.
    let v2 = publisher.publish_default(&snapshot(8081)).unwrap();
    agent.say(beat(2, &[])).await;
    let mut saw_v2 = false;
    loop {
        let m = agent.next().await;
        if let Some(s) = &m.snapshot {
            assert_eq!(s.version, v2);
            saw_v2 = true;
        }
        if m.heartbeat_ack == 2 {
            assert!(saw_v2, "heartbeat 2 answered before snapshot {v2}");
            break;
        }
        assert_eq!(m.heartbeat_ack, 0, "unexpected answer {m:?}");
    }

    // An old or repeated sequence number is not answered again.
    agent.say(beat(2, &[])).await;
    agent.say(beat(1, &[])).await;
    agent.nothing().await;
}

#[tokio::test]
async fn the_subscriber_tracks_its_contact_with_the_controller() {
    let publisher = Publisher::with_config(PublisherConfig {
        heartbeat: Duration::from_millis(50),
        fencing_delay: Some(Duration::from_millis(700)),
    });
    publisher.publish_default(&snapshot(8080)).unwrap();
    let (addr, stop) = serve(&publisher, allow_all(), None).await;
    let subscriber = Subscriber::new(
        SubscriberConfig {
            endpoint: Endpoint::from_shared(format!("http://{addr}")).unwrap(),
            node: "a".into(),
            agent_version: "test".into(),
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
        },
        Recorder::default(),
    );
    let mut contact = subscriber.contact();
    assert_eq!(*contact.borrow(), Contact::default());
    let task = tokio::spawn(subscriber.run());

    // Answers keep coming: the time of the last confirmed heartbeat moves forward.
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        contact.wait_for(|c| c.confirmed.is_some()),
    )
    .await
    .unwrap()
    .unwrap()
    .to_owned();
    assert_eq!(first.fencing_delay, Some(Duration::from_millis(700)));
    let margin = Duration::from_millis(100);
    assert_eq!(
        first.l2_deadline(margin),
        Some(first.confirmed.unwrap() + Duration::from_millis(600))
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        contact.wait_for(|c| c.confirmed > first.confirmed),
    )
    .await
    .unwrap()
    .unwrap();

    // The controller goes away: the contact stops moving, and its deadline passes.
    publisher.close();
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = *contact.borrow_and_update();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(*contact.borrow(), last);
    let deadline = last.l2_deadline(margin).unwrap();
    assert!(deadline < tokio::time::Instant::now());
    task.abort();
}
