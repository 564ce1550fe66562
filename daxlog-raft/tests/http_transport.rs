//! Nodes of one process talking over HTTP on 127.0.0.1 (ephemeral ports): membership built by
//! the admin API, appends and reads through the client API, a follower's `421`, the wire
//! header check, a snapshot installed over HTTP in several chunks, and the partition hook.
//! Every wait is bounded.

use std::future::Future;
use std::time::{Duration, Instant};

use daxlog_raft::http::{
    encode, APPEND_ENTRIES_PATH, FROM_HEADER, INSTALL_SNAPSHOT_PATH, VOTE_PATH, WIRE_HEADER,
};
use daxlog_raft::node::{Node, NodeOptions};
use daxlog_raft::NodeId;
use openraft::raft::VoteRequest;
use openraft::Vote;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn options(id: NodeId, dir: &std::path::Path) -> NodeOptions {
    NodeOptions {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        ..NodeOptions::new(id, "127.0.0.1:0", dir.join(format!("node-{id}")))
    }
}

/// [`options`] with a request timeout of 2 s, for tests that wait for refusals and timeouts.
fn quick_options(id: NodeId, dir: &std::path::Path) -> NodeOptions {
    NodeOptions {
        request_timeout: Duration::from_secs(2),
        ..options(id, dir)
    }
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Client { http }
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let body = resp.bytes().await.expect("body read");
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, value)
    }

    async fn get(&self, node: &Node, path: &str) -> (u16, Value) {
        self.json(self.http.get(format!("http://{}{path}", node.addr())))
            .await
    }

    async fn post(&self, node: &Node, path: &str, body: Value) -> (u16, Value) {
        self.json(
            self.http
                .post(format!("http://{}{path}", node.addr()))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    async fn append(&self, node: &Node, data: &[u8]) -> (u16, Value) {
        self.json(
            self.http
                .post(format!("http://{}/append", node.addr()))
                .header("content-type", "application/octet-stream")
                .body(data.to_vec()),
        )
        .await
    }

    async fn metrics(&self, node: &Node) -> Value {
        let (status, m) = self.get(node, "/metrics").await;
        assert_eq!(status, 200, "{m}");
        m
    }

    /// The journal as `(index, data)`, read with `query` (e.g. `local=true`, `from=I`) page
    /// after page (each bounded by bytes) until a page is empty or not `200`; the status and
    /// body are the last page's.
    async fn journal(&self, node: &Node, query: &str) -> (u16, Vec<(u64, Vec<u8>)>, Value) {
        let mut from = 0;
        let mut rest = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            match part.strip_prefix("from=") {
                Some(f) => from = f.parse().unwrap(),
                None => rest.push(part),
            }
        }
        let rest = rest.join("&");
        let mut entries = Vec::new();
        loop {
            let path = format!("/read?max=100000&from={from}&{rest}");
            let (status, v) = self.get(node, &path).await;
            let page: Vec<(u64, Vec<u8>)> = v["entries"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            (
                                e["index"].as_u64().unwrap(),
                                hex::decode(e["data_hex"].as_str().unwrap()).unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if status != 200 || page.is_empty() {
                return (status, entries, v);
            }
            from = v["next"].as_u64().expect("next");
            entries.extend(page);
        }
    }
}

/// Runs a test's body, failing it if it takes more than two minutes.
async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test finished in time");
}

/// Polls `check` until it returns `Some`, for at most `WAIT`.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_leader(c: &Client, node: &Node) {
    until("a leader", || async {
        let m = c.metrics(node).await;
        (m["state"] == "Leader" && m["current_leader"] == json!(node.id())).then_some(())
    })
    .await;
}

/// Waits until `node` has applied `index` (its local journal then holds everything up to it).
async fn wait_applied(c: &Client, node: &Node, index: u64) {
    until(&format!("node {} to apply {index}", node.id()), || async {
        let m = c.metrics(node).await;
        (m["last_applied"].as_u64() >= Some(index)).then_some(())
    })
    .await;
}

async fn shutdown(nodes: Vec<Node>) {
    for node in nodes {
        tokio::time::timeout(WAIT, node.shutdown())
            .await
            .expect("shutdown in time")
            .expect("clean shutdown");
    }
}

/// A peer RPC with this body and sender, answered with its status and text.
async fn raw_vote(c: &Client, node: &Node, from: NodeId, body: Vec<u8>) -> (u16, String) {
    let resp = c
        .http
        .post(format!("http://{}{VOTE_PATH}", node.addr()))
        .header(FROM_HEADER, from)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_http() {
    bounded(three_nodes()).await;
}

async fn three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = Node::start(NodeOptions {
        init: true,
        test_hooks: true,
        ..options(1, dir.path())
    })
    .await
    .unwrap();
    // Node 2 without test hooks: its /test routes do not exist.
    let n2 = Node::start(options(2, dir.path())).await.unwrap();
    let n3 = Node::start(NodeOptions {
        test_hooks: true,
        ..options(3, dir.path())
    })
    .await
    .unwrap();
    wait_leader(&c, &n1).await;

    for n in [&n2, &n3] {
        let (status, v) = c
            .post(
                &n1,
                "/admin/add-learner",
                json!({"id": n.id(), "addr": n.addr().to_string()}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = c
        .post(
            &n1,
            "/admin/change-membership",
            json!({"voters": [1, 2, 3]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let m = c.metrics(&n1).await;
    assert_eq!(m["membership"]["voters"], json!([1, 2, 3]));
    assert_eq!(m["membership"]["learners"], json!([]));

    // Appends through the leader: increasing indexes, any bytes.
    let mut written = Vec::new();
    for i in 0..30u32 {
        let data: Vec<u8> = match i {
            0 => vec![],
            1 => (0..=255).collect(),
            _ => format!("record {i}").into_bytes(),
        };
        let (status, v) = c.append(&n1, &data).await;
        assert_eq!(status, 200, "{v}");
        let index = v["index"].as_u64().expect("an index");
        if let Some((last, _)) = written.last() {
            assert!(index > *last, "index {index} after {last}");
        }
        written.push((index, data));
    }
    let last = written.last().unwrap().0;

    // Linearizable read on the leader, local reads on the followers: the same journal.
    let (status, journal, v) = c.journal(&n1, "from=0").await;
    assert_eq!(status, 200);
    assert_eq!(journal, written);
    assert!(v["applied"].as_u64() >= Some(last));
    for n in [&n2, &n3] {
        wait_applied(&c, n, last).await;
        let (status, journal, _) = c.journal(n, "from=0&local=true").await;
        assert_eq!(status, 200);
        assert_eq!(journal, written, "node {}", n.id());
    }
    // Paging: from and max.
    let (_, page, _) = c
        .journal(&n2, &format!("local=true&from={}", written[10].0))
        .await;
    assert_eq!(page, written[10..]);
    let (_, v) = c
        .get(
            &n2,
            &format!("/read?local=true&from={}&max=3", written[10].0),
        )
        .await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);

    // Followers send clients to the leader.
    let leader_addr = n1.addr().to_string();
    let (status, v) = c.append(&n2, b"to a follower").await;
    assert_eq!(status, 421);
    assert_eq!(
        v,
        json!({"error": "not_leader", "leader": 1, "leader_addr": leader_addr})
    );
    let (status, v) = c.get(&n3, "/read?from=0").await;
    assert_eq!((status, &v["leader"]), (421, &json!(1)), "{v}");
    let (status, v) = c
        .post(&n3, "/admin/change-membership", json!({"voters": [1, 2]}))
        .await;
    assert_eq!(
        (status, &v["leader_addr"]),
        (421, &json!(leader_addr)),
        "{v}"
    );

    // The leader's view of replication.
    let m = c.metrics(&n1).await;
    assert_eq!(m["state"], "Leader");
    assert_eq!(m["last_log_index"].as_u64(), Some(last));
    for id in ["1", "2", "3"] {
        let matched = until("replication metrics", || async {
            let m = c.metrics(&n1).await;
            let matched = m["replication"][id].as_u64();
            (matched == Some(last)).then_some(matched)
        })
        .await;
        assert_eq!(matched, Some(last));
    }
    assert_eq!(c.metrics(&n2).await["replication"], Value::Null);

    // Bodies without the DXR header are refused, typed, before reaching Raft.
    let vote = VoteRequest::new(Vote::new(99, 2), None);
    let mut body = encode(&vote).unwrap();
    body[..4].copy_from_slice(b"DXR\x02");
    let (status, text) = raw_vote(&c, &n1, 2, body).await;
    assert_eq!(status, 400);
    assert!(text.contains("DXR version 1"), "{text}");
    let (status, _) = raw_vote(&c, &n1, 2, b"{\"vote\":1}".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = raw_vote(&c, &n1, 2, WIRE_HEADER.to_vec()).await;
    assert_eq!(status, 400);
    let resp = c
        .http
        .post(format!("http://{}/raft/append-entries", n1.addr()))
        .body(b"DXR\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(c.metrics(&n1).await["current_term"], json!(1));

    // Test hooks: 404 where they are off.
    let (status, _) = c
        .post(&n2, "/test/partition", json!({"blocked": [1]}))
        .await;
    assert_eq!(status, 404);

    // Cut the leader off: it refuses its peers' RPCs and sends them none; 2 and 3 elect one
    // of them, which takes writes.
    let (status, v) = c
        .post(&n1, "/test/partition", json!({"blocked": [2, 3]}))
        .await;
    assert_eq!((status, v), (200, json!({"blocked": [2, 3]})));
    let (status, text) = raw_vote(&c, &n1, 3, encode(&vote).unwrap()).await;
    assert_eq!(status, 503, "{text}");
    let new_leader = until("a leader among 2 and 3", || async {
        for n in [&n2, &n3] {
            let m = c.metrics(n).await;
            if m["state"] == "Leader" && m["current_leader"] == json!(n.id()) {
                return Some(n.id());
            }
        }
        None
    })
    .await;
    let leader = if new_leader == 2 { &n2 } else { &n3 };
    let (status, v) = c.append(leader, b"while 1 is cut off").await;
    assert_eq!(status, 200, "{v}");
    let index = v["index"].as_u64().unwrap();
    assert!(index > last);
    written.push((index, b"while 1 is cut off".to_vec()));
    let (_, journal, _) = c.journal(&n1, "from=0&local=true").await;
    assert_eq!(journal, written[..written.len() - 1], "node 1 is cut off");

    // Heal: node 1 follows the new leader and receives what it missed.
    let (status, _) = c.post(&n1, "/test/partition", json!({"blocked": []})).await;
    assert_eq!(status, 200);
    wait_applied(&c, &n1, index).await;
    let m = c.metrics(&n1).await;
    assert_eq!(m["current_leader"], json!(new_leader));
    assert_ne!(m["state"], "Leader");
    for n in [&n1, &n2, &n3] {
        wait_applied(&c, n, index).await;
        let (_, journal, _) = c.journal(n, "from=0&local=true").await;
        assert_eq!(journal, written, "node {}", n.id());
    }
    let (status, journal, _) = c.journal(leader, "from=0").await;
    assert_eq!((status, journal), (200, written));

    shutdown(vec![n1, n2, n3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_learner_receives_the_journal_by_snapshot() {
    bounded(late_learner()).await;
}

async fn late_learner() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let small = |id| NodeOptions {
        snapshot_every: 10,
        // Several InstallSnapshot chunks for one snapshot.
        snapshot_chunk_bytes: 16 << 10,
        ..options(id, dir.path())
    };
    let n1 = Node::start(NodeOptions {
        init: true,
        ..small(1)
    })
    .await
    .unwrap();
    wait_leader(&c, &n1).await;

    // 1 KiB records: the snapshot (postcard) is about 100 KiB.
    let mut written = Vec::new();
    for i in 0..100u32 {
        let data: Vec<u8> = (0..1024u32).map(|b| (b * 7 + i) as u8).collect();
        let (status, v) = c.append(&n1, &data).await;
        assert_eq!(status, 200, "{v}");
        written.push((v["index"].as_u64().unwrap(), data));
    }
    let first = written[0].0;
    let last = written.last().unwrap().0;
    // The leader's log no longer holds the first records.
    let purged = until("a purge past the first record", || async {
        let m = c.metrics(&n1).await;
        m["purged"].as_u64().filter(|p| *p >= first)
    })
    .await;
    assert!(purged >= first);

    let n2 = Node::start(small(2)).await.unwrap();
    let (status, v) = c
        .post(
            &n1,
            "/admin/add-learner",
            json!({"id": 2, "addr": n2.addr().to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    wait_applied(&c, &n2, last).await;
    let m2 = c.metrics(&n2).await;
    assert!(m2["snapshot"].as_u64() >= Some(purged), "{m2}");
    assert_eq!(m2["state"], "Learner");
    let (status, journal, _) = c.journal(&n2, "from=0&local=true").await;
    assert_eq!(status, 200);
    assert_eq!(journal, written, "the learner holds the whole journal");

    // Later records reach it by replication.
    let (status, v) = c.append(&n1, b"after").await;
    assert_eq!(status, 200);
    let index = v["index"].as_u64().unwrap();
    written.push((index, b"after".to_vec()));
    wait_applied(&c, &n2, index).await;
    let (_, journal, _) = c.journal(&n2, "from=0&local=true").await;
    assert_eq!(journal, written);

    // Restarted from its files (on the same address), the learner still has it all (snapshot
    // and log).
    let addr = n2.addr().to_string();
    n2.shutdown().await.unwrap();
    let n2 = Node::start(NodeOptions {
        listen: addr,
        ..small(2)
    })
    .await
    .unwrap();
    wait_applied(&c, &n2, index).await;
    let (_, journal, _) = c.journal(&n2, "from=0&local=true").await;
    assert_eq!(journal, written);

    shutdown(vec![n1, n2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_slow_to_take_a_snapshot_starts_no_election() {
    bounded(slow_snapshot()).await;
}

/// A voter that catches up by a snapshot whose chunks each take longer than an election
/// timeout to be taken (the `/test/slow-snapshot` hook: 1.3 s a chunk but the last; with
/// these options a follower that holds a leader's vote starts an election 0.9-1.2 s after it
/// last heard from it, and the leader sends no heartbeat to a node while a snapshot to it is
/// in flight) hears from its leader all along: no node's term changes, the leader stays, and
/// the voter ends with the leader's journal.
async fn slow_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let opts = |id| NodeOptions {
        snapshot_every: 10,
        keep_after_snapshot: Some(2),
        // 4 chunks for the snapshot of 100 records of 1 KiB.
        snapshot_chunk_bytes: 32 << 10,
        test_hooks: true,
        ..options(id, dir.path())
    };
    let mut nodes = voters3(&c, opts).await;
    let n3 = nodes.pop().unwrap();
    let n3_addr = n3.addr().to_string();
    n3.shutdown().await.unwrap();

    let mut written = Vec::new();
    for i in 0..100u32 {
        let data: Vec<u8> = (0..1024u32).map(|b| (b * 3 + i) as u8).collect();
        let (status, v) = c.append(&nodes[0], &data).await;
        assert_eq!(status, 200, "{v}");
        written.push((v["index"].as_u64().unwrap(), data));
    }
    let last = written.last().unwrap().0;
    // The leader's log no longer holds what node 3 lacks: it catches up by a snapshot.
    let purged = until("a purge past the first record", || async {
        let m = c.metrics(&nodes[0]).await;
        m["purged"].as_u64().filter(|p| *p >= written[0].0)
    })
    .await;

    // Node 3 back, slow to take snapshot chunks; the leader reaches it once the hook is set.
    let (status, _) = c
        .post(&nodes[0], "/test/partition", json!({"blocked": [3]}))
        .await;
    assert_eq!(status, 200);
    let n3 = Node::start(NodeOptions {
        listen: n3_addr,
        ..opts(3)
    })
    .await
    .unwrap();
    let (status, v) = c
        .post(&n3, "/test/slow-snapshot", json!({"chunk_delay_ms": 1300}))
        .await;
    assert_eq!(status, 200, "{v}");
    let terms = |ms: &[Value]| {
        ms.iter()
            .map(|m| m["current_term"].clone())
            .collect::<Vec<_>>()
    };
    let mut before = Vec::new();
    for n in [&nodes[0], &nodes[1], &n3] {
        before.push(c.metrics(n).await);
    }
    let healed = Instant::now();
    let (status, _) = c
        .post(&nodes[0], "/test/partition", json!({"blocked": []}))
        .await;
    assert_eq!(status, 200);

    wait_applied(&c, &n3, last).await;
    let took = healed.elapsed();
    assert!(
        took > Duration::from_millis(2600),
        "the snapshot took {took:?}: fewer than two slow chunks"
    );
    let mut after = Vec::new();
    for n in [&nodes[0], &nodes[1], &n3] {
        after.push(c.metrics(n).await);
    }
    assert_eq!(terms(&after), terms(&before), "a term changed: {after:?}");
    for m in &after {
        assert_eq!(m["current_leader"], json!(1), "{m}");
    }
    assert!(
        after[2]["snapshot"].as_u64() >= Some(purged),
        "{}",
        after[2]
    );
    assert_eq!(after[2]["state"], "Follower");
    let (status, journal, _) = c.journal(&n3, "from=0&local=true").await;
    assert_eq!(status, 200);
    assert_eq!(journal, written);

    nodes.push(n3);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_journal_is_truncated_on_every_node() {
    bounded(truncated_journal()).await;
}

/// `POST /truncate` drops the journal's records below an index on every node, keeps the last
/// record, and answers the first index left; `/read` tells it (`first`); an index past the
/// journal's next one is refused unproposed (`409`), and a truncation repeated after a write
/// keeps that write; later writes take higher indexes; a node restarted from its files and a
/// learner that arrives by snapshot hold exactly what is left.
async fn truncated_journal() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let opts = |id| NodeOptions {
        snapshot_every: 10,
        ..options(id, dir.path())
    };
    let mut nodes = voters3(&c, opts).await;
    let mut written = Vec::new();
    for i in 0..30u32 {
        let (status, v) = c.append(&nodes[0], format!("record {i}").as_bytes()).await;
        assert_eq!(status, 200, "{v}");
        written.push((
            v["index"].as_u64().unwrap(),
            format!("record {i}").into_bytes(),
        ));
    }

    // Below the 21st record.
    let cut = written[20].0;
    let (status, v) = c.post(&nodes[1], "/truncate", json!({"before": cut})).await;
    assert_eq!((status, &v["error"]), (421, &json!("not_leader")), "{v}");
    let (status, v) = c.post(&nodes[0], "/truncate", json!({"before": cut})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["first"], json!(cut));
    written.drain(..20);
    journals_hold(&c, &nodes[0], &nodes[1..], &written).await;
    let (_, v) = c.get(&nodes[0], "/read?from=0&max=1").await;
    assert_eq!(
        (&v["first"], &v["entries"][0]["index"]),
        (&json!(cut), &json!(cut)),
        "{v}"
    );
    let (_, v) = c
        .get(&nodes[0], &format!("/read?from={}", cut + 1000))
        .await;
    assert_eq!(
        (&v["first"], &v["entries"]),
        (&json!(cut), &json!([])),
        "{v}"
    );

    // Past the journal's next index: nothing dropped. At it: all but the last record, and
    // the next write goes after it.
    let last = written.last().unwrap().0;
    let log_before = c.metrics(&nodes[0]).await["last_log_index"].clone();
    for before in [last + 2, u64::MAX] {
        let (status, v) = c
            .post(&nodes[0], "/truncate", json!({"before": before}))
            .await;
        assert_eq!((status, &v["error"]), (409, &json!("past_the_end")), "{v}");
        assert_eq!(v["next"], json!(last + 1));
    }
    // Refused before it was proposed: nothing reached the log.
    assert_eq!(c.metrics(&nodes[0]).await["last_log_index"], log_before);
    journals_hold(&c, &nodes[0], &nodes[1..], &written).await;
    let (status, v) = c
        .post(&nodes[0], "/truncate", json!({"before": last + 1}))
        .await;
    assert_eq!((status, &v["first"]), (200, &json!(last)), "{v}");
    written.drain(..written.len() - 1);
    let (status, v) = c.append(&nodes[0], b"after").await;
    assert_eq!(status, 200, "{v}");
    let after = v["index"].as_u64().unwrap();
    assert!(after > last, "{after} after {last}");
    written.push((after, b"after".to_vec()));
    journals_hold(&c, &nodes[0], &nodes[1..], &written).await;
    // The same truncation again (a client's retry): nothing at or past its index goes.
    let (status, v) = c
        .post(&nodes[0], "/truncate", json!({"before": last + 1}))
        .await;
    assert_eq!((status, &v["first"]), (200, &json!(after)), "{v}");
    written.drain(..written.len() - 1);
    journals_hold(&c, &nodes[0], &nodes[1..], &written).await;
    // A malformed request changes nothing.
    let (status, _) = c.post(&nodes[0], "/truncate", json!({"before": "x"})).await;
    assert!((400..500).contains(&status), "{status}");

    // Node 3 restarted from its files; node 4 arrives by snapshot (purged log).
    let n3 = nodes.pop().unwrap();
    let addr = n3.addr().to_string();
    n3.shutdown().await.unwrap();
    for i in 0..30u32 {
        let data = format!("more {i}").into_bytes();
        let (status, v) = c.append(&nodes[0], &data).await;
        assert_eq!(status, 200, "{v}");
        written.push((v["index"].as_u64().unwrap(), data));
    }
    until("a purge past the truncation", || async {
        let m = c.metrics(&nodes[0]).await;
        m["purged"].as_u64().filter(|p| *p > after)
    })
    .await;
    nodes.push(
        Node::start(NodeOptions {
            listen: addr,
            ..opts(3)
        })
        .await
        .unwrap(),
    );
    let n4 = Node::start(opts(4)).await.unwrap();
    let learner = json!({"id": 4, "addr": n4.addr().to_string()});
    let (status, v) = c.post(&nodes[0], "/admin/add-learner", learner).await;
    assert_eq!(status, 200, "{v}");
    assert!(c.metrics(&n4).await["snapshot"].as_u64().is_some());
    nodes.push(n4);
    journals_hold(&c, &nodes[0], &nodes[1..], &written).await;
    for n in &nodes {
        let (_, v) = c.get(n, "/read?from=0&max=1&local=true").await;
        assert_eq!(v["first"], json!(after), "node {}: {v}", n.id());
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_log_cannot_take_are_refused() {
    bounded(refused_writes()).await;
}

/// On a 256 KiB log, too large an entry gets `413`, and a full log `503 log_full`; the
/// snapshot that triggers lets the log be purged, and a retry then succeeds.
async fn refused_writes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = Node::start(NodeOptions {
        init: true,
        log_capacity: 256 << 10,
        keep_after_snapshot: Some(0),
        // The log must fill: no snapshot and purge when it is half full.
        purge_above_percent: None,
        ..options(1, dir.path())
    })
    .await
    .unwrap();
    wait_leader(&c, &n1).await;

    // Larger than the log: refused from its length alone.
    let (status, v) = c.append(&n1, &vec![7u8; 300 << 10]).await;
    assert_eq!((status, &v["error"]), (413, &json!("too_large")), "{v}");
    // Data of exactly the largest entry's size: the entry around it (log id, kind, lengths) is
    // larger, and admission refuses it.
    let max = v["max"].as_u64().expect("max in the answer") as usize;
    let (status, v) = c.append(&n1, &vec![7u8; max]).await;
    assert_eq!((status, &v["error"]), (413, &json!("too_large")), "{v}");
    assert!(v["len"].as_u64() > v["max"].as_u64(), "{v}");

    let record = vec![0x5au8; 4 << 10];
    let mut accepted = 0;
    let full = loop {
        let (status, v) = c.append(&n1, &record).await;
        match status {
            200 => accepted += 1,
            503 => break v,
            _ => panic!("unexpected {status} {v}"),
        }
        assert!(accepted < 100, "the log never filled");
    };
    assert_eq!(full["error"], "log_full", "{full}");
    assert!(accepted > 10, "{accepted} records before the log was full");
    let m = c.metrics(&n1).await;
    assert_eq!(m["state"], "Leader", "the leader stays");

    // A record as large as those that filled the log: it fits only once the log was purged.
    let after = vec![0xa5u8; record.len()];
    let index = until("a write after the purge", || async {
        let (status, v) = c.append(&n1, &after).await;
        (status == 200).then(|| v["index"].as_u64().unwrap())
    })
    .await;
    assert!(c.metrics(&n1).await["purged"].as_u64().is_some());
    let (status, journal, _) = c.journal(&n1, "from=0").await;
    assert_eq!(status, 200);
    assert_eq!(journal.len(), accepted + 1);
    assert_eq!(journal.last().unwrap(), &(index, after.clone()));
    assert!(journal[..accepted].iter().all(|(_, d)| *d == record));

    shutdown(vec![n1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_what_would_hurt_it() {
    bounded(guards()).await;
}

/// A node's directory is its own (another id, or a second process, is refused); a learner at
/// an address where nothing answers is reported (`504`), and so is a membership change or an
/// append that cannot be committed (`503 timeout`, within the request timeout, not never);
/// a snapshot chunk far past the bytes received is refused before it reaches openraft.
async fn guards() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let quick = |id| quick_options(id, dir.path());
    let n1 = Node::start(NodeOptions {
        init: true,
        ..quick(1)
    })
    .await
    .unwrap();
    wait_leader(&c, &n1).await;
    let (status, v) = c.append(&n1, b"one").await;
    assert_eq!(status, 200, "{v}");

    // The directory is held while the node runs, whatever the id.
    for id in [1, 7] {
        let e = Node::start(NodeOptions {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("node-1"),
            ..quick(id)
        })
        .await
        .err()
        .expect("a second process on the directory is refused");
        assert!(e.to_string().contains("in use by another process"), "{e}");
    }
    // (By a file in it: the directory itself stays free for daxlog, which locks it while it
    // creates a log there, and warned that another program held it.)
    let d = std::fs::File::open(dir.path().join("node-1")).unwrap();
    d.try_lock().expect("the directory itself is not locked");
    d.unlock().unwrap();

    // A hostile snapshot chunk: refused, typed, and the node goes on.
    let m = c.metrics(&n1).await;
    let term = m["current_term"].as_u64().unwrap();
    let chunk = openraft::raft::InstallSnapshotRequest::<daxlog_raft::TypeConfig> {
        vote: Vote::new_committed(term, 1),
        meta: openraft::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "forged".into(),
        },
        offset: 1 << 46,
        data: vec![0u8; 1],
        done: false,
    };
    let resp = c
        .http
        .post(format!("http://{}/raft/install-snapshot", n1.addr()))
        .header(FROM_HEADER, 2)
        .body(encode(&chunk).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("before its first chunk"), "{text}");
    assert_eq!(c.metrics(&n1).await["state"], "Leader");

    // A learner nobody runs: reported, not taken for caught up.
    let (status, v) = c
        .post(
            &n1,
            "/admin/add-learner",
            json!({"id": 9, "addr": "127.0.0.1:1"}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]),
        (504, &json!("learner_not_caught_up")),
        "{v}"
    );
    assert_eq!(v["addr"], json!("127.0.0.1:1"), "{v}");
    // A voter is not removed that way.
    let (status, v) = c
        .post(&n1, "/admin/remove-nodes", json!({"ids": [1]}))
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("is a voter"), "{v}");
    // Removed, it is no learner any more; added again, it is reported again.
    let (status, v) = c
        .post(&n1, "/admin/remove-nodes", json!({"ids": [9]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let learners = c.metrics(&n1).await["membership"]["learners"].clone();
    assert_eq!(learners, json!([]), "{learners}");
    let (status, v) = c
        .post(
            &n1,
            "/admin/add-learner",
            json!({"id": 9, "addr": "127.0.0.1:1"}),
        )
        .await;
    assert_eq!(status, 504, "{v}");
    // Made a voter anyway, it stops every commit: the change and the next append time out
    // with an answer that says the outcome is unknown.
    let t = Instant::now();
    let (status, v) = c
        .post(&n1, "/admin/change-membership", json!({"voters": [1, 9]}))
        .await;
    assert_eq!((status, &v["error"]), (503, &json!("timeout")), "{v}");
    let (status, v) = c.append(&n1, b"two").await;
    assert_eq!((status, &v["error"]), (503, &json!("timeout")), "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("may still be committed"),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    shutdown(vec![n1]).await;

    // Its files, under another id: refused, and nothing changed.
    let e = Node::start(NodeOptions {
        data_dir: dir.path().join("node-1"),
        ..quick(7)
    })
    .await
    .err()
    .expect("another id on the directory is refused");
    assert!(
        e.to_string().contains("holds the files of node \"1\""),
        "{e}"
    );
    // A directory with files but no node.id (made before ids were recorded): refused until
    // the id is written by hand.
    let id_file = dir.path().join("node-1").join("node.id");
    std::fs::remove_file(&id_file).unwrap();
    for id in [7, 1] {
        let e = Node::start(NodeOptions {
            data_dir: dir.path().join("node-1"),
            ..quick(id)
        })
        .await
        .err()
        .expect("a directory with files and no node.id is refused");
        assert!(e.to_string().contains("but no node id"), "{e}");
    }
    std::fs::write(&id_file, "1\n").unwrap();
    // A fresh mount point (lost+found, a hidden file) is a new directory.
    let mount = dir.path().join("mount");
    std::fs::create_dir_all(mount.join("lost+found")).unwrap();
    std::fs::write(mount.join(".keep"), "").unwrap();
    let n5 = Node::start(NodeOptions {
        data_dir: mount.clone(),
        ..quick(5)
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(mount.join("node.id")).unwrap(),
        "5\n"
    );
    shutdown(vec![n5]).await;
    let n1 = Node::start(quick(1)).await.unwrap();
    let (_, journal, _) = c.journal(&n1, "from=0&local=true").await;
    assert_eq!(
        journal.first().map(|(_, d)| d.clone()),
        Some(b"one".to_vec())
    );
    shutdown(vec![n1]).await;
}

/// Starts nodes 1, 2 and 3 with `opts(id)`, node 1 initializing the cluster, and makes them
/// its voters through the admin API; node 1 leads.
async fn voters3(c: &Client, opts: impl Fn(NodeId) -> NodeOptions) -> Vec<Node> {
    let mut nodes = vec![Node::start(NodeOptions {
        init: true,
        ..opts(1)
    })
    .await
    .unwrap()];
    for id in [2, 3] {
        nodes.push(Node::start(opts(id)).await.unwrap());
    }
    wait_leader(c, &nodes[0]).await;
    for n in &nodes[1..] {
        let learner = json!({"id": n.id(), "addr": n.addr().to_string()});
        let (status, v) = c.post(&nodes[0], "/admin/add-learner", learner).await;
        assert_eq!(status, 200, "{v}");
    }
    let voters = json!({"voters": [1, 2, 3]});
    let (status, v) = c.post(&nodes[0], "/admin/change-membership", voters).await;
    assert_eq!(status, 200, "{v}");
    nodes
}

/// The leader's journal (a linearizable read) is `acked`, and every follower's becomes it.
async fn journals_hold(c: &Client, leader: &Node, followers: &[Node], acked: &[(u64, Vec<u8>)]) {
    let (status, journal, _) = c.journal(leader, "from=0").await;
    assert_eq!(status, 200);
    assert_eq!(journal, acked);
    for n in followers {
        until(&format!("node {}'s journal", n.id()), || async {
            let (_, journal, _) = c.journal(n, "from=0&local=true").await;
            (journal == acked).then_some(())
        })
        .await;
    }
}

/// Shuts the leader (shared with the client tasks, all finished) and the followers down.
/// `clients` clients, each appending `each` records of `record` bytes to `leader` one after
/// the other (the bytes name the client and the write); a `503 log_full` is retried after 5
/// ms, at most `retries` times per client. The acknowledged `(index, bytes)`, sorted.
async fn write_records(
    leader: &std::sync::Arc<Node>,
    clients: usize,
    each: usize,
    record: usize,
    retries: u32,
) -> Vec<(u64, Vec<u8>)> {
    let mut tasks = Vec::new();
    for t in 0..clients {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            let (mut acked, mut refused) = (Vec::new(), 0u32);
            for i in 0..each {
                let mut data = format!("client {t} write {i} ").into_bytes();
                data.resize(record, (t * 7 + i) as u8);
                loop {
                    let (status, v) = c.append(&leader, &data).await;
                    if status == 200 {
                        acked.push((v["index"].as_u64().expect("an index"), data));
                        break;
                    }
                    assert_eq!((status, &v["error"]), (503, &json!("log_full")), "{v}");
                    refused += 1;
                    assert!(refused <= retries, "client {t}: the log never made room");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked.sort();
    acked
}

async fn shutdown_after_clients(leader: std::sync::Arc<Node>, mut followers: Vec<Node>) {
    let leader = std::sync::Arc::into_inner(leader).expect("the clients are done");
    followers.insert(0, leader);
    shutdown(followers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_raft_entries() {
    bounded(write_groups()).await;
}

/// Many clients appending at once on a 3-node cluster: the leader carries several writes in
/// one Raft entry (`/metrics` counts fewer entries than writes), every write is answered `200`
/// with an index of its own, and every node's journal holds exactly the acknowledged writes,
/// each at its acknowledged index.
async fn write_groups() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let mut nodes = voters3(&c, |id| options(id, dir.path())).await;

    const CLIENTS: usize = 48;
    const EACH: usize = 10;
    let leader = std::sync::Arc::new(nodes.remove(0));
    let mut tasks = Vec::new();
    for t in 0..CLIENTS {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            let mut acked = Vec::new();
            for i in 0..EACH {
                // Sizes from empty to a few KiB; the bytes name the client and the write.
                let len = (t * 131 + i * 977) % 3000;
                let mut data = format!("client {t} write {i} ").into_bytes();
                data.resize(data.len() + len, (t + i) as u8);
                let (status, v) = c.append(&leader, &data).await;
                assert_eq!(status, 200, "client {t} write {i}: {v}");
                acked.push((v["index"].as_u64().expect("an index"), data));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked.sort();
    assert_eq!(acked.len(), CLIENTS * EACH);
    assert!(
        acked.windows(2).all(|w| w[0].0 < w[1].0),
        "two writes were answered with the same index"
    );

    let m = c.metrics(&leader).await;
    let (entries, writes) = (
        m["client_writes"]["entries"].as_u64().unwrap(),
        m["client_writes"]["writes"].as_u64().unwrap(),
    );
    assert_eq!(writes, (CLIENTS * EACH) as u64, "{m}");
    assert!(
        entries < writes,
        "{writes} writes went in {entries} entries: none shared one"
    );

    journals_hold(&c, &leader, &nodes, &acked).await;
    shutdown_after_clients(leader, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_purges_its_log_by_its_bytes() {
    bounded(log_pressure()).await;
}

/// Writes of twice the log's capacity through a 3-node cluster whose snapshot policy
/// never snapshots (one every million entries): every node snapshots and purges its own log
/// when it is half full, so no follower's log fills (a follower whose log is full stops), the
/// leader refuses writes only for a moment (`503 log_full`, retried here), and every journal
/// holds exactly the acknowledged writes.
async fn log_pressure() {
    const CAPACITY: u64 = 4 << 20;
    const CLIENTS: usize = 16;
    const EACH: usize = 256;
    const RECORD: usize = 2 << 10;
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let opts = |id| NodeOptions {
        log_capacity: CAPACITY,
        snapshot_every: 1_000_000,
        // A follower that stopped leaves no quorum: the writes then fail at this timeout.
        request_timeout: Duration::from_secs(5),
        ..options(id, dir.path())
    };
    let mut nodes = voters3(&c, opts).await;

    let leader = std::sync::Arc::new(nodes.remove(0));
    let acked = write_records(&leader, CLIENTS, EACH, RECORD, 20_000).await;
    assert_eq!(acked.len(), CLIENTS * EACH);
    assert!((CLIENTS * EACH * RECORD) as u64 >= 2 * CAPACITY);

    for n in &nodes {
        let running = n.raft().metrics().borrow().running_state.clone();
        assert!(running.is_ok(), "node {} stopped: {running:?}", n.id());
    }
    journals_hold(&c, &leader, &nodes, &acked).await;
    for n in &nodes {
        let m = c.metrics(n).await;
        assert_eq!(m["state"], "Follower", "node {}: {m}", n.id());
        assert!(
            m["purged"].as_u64().is_some(),
            "node {} never purged: {m}",
            n.id()
        );
    }
    shutdown_after_clients(leader, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_log_is_full_takes_what_fits_and_stays_up() {
    bounded(follower_log_full()).await;
}

/// Node 3's log is a quarter the size of the others' and it never purges by itself (no log
/// pressure, a snapshot policy that never snapshots), so writes of nearly twice its capacity
/// fill it while the leader and node 2 commit them. It must take only the entries that fit
/// (openraft stops a node whose log store's `append` fails) and stay up, lagging; once it
/// snapshots and purges, it catches up, and every journal holds exactly the acknowledged
/// writes.
async fn follower_log_full() {
    const BIG: u64 = 4 << 20;
    const SMALL: u64 = 1 << 20;
    const CLIENTS: usize = 4;
    const EACH: usize = 28;
    const RECORD: usize = 16 << 10;
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let opts = |id| {
        let all = NodeOptions {
            log_capacity: BIG,
            ..options(id, dir.path())
        };
        match id {
            3 => NodeOptions {
                log_capacity: SMALL,
                purge_above_percent: None,
                snapshot_every: 1_000_000,
                ..all
            },
            _ => all,
        }
    };
    let mut nodes = voters3(&c, opts).await;

    let leader = std::sync::Arc::new(nodes.remove(0));
    let acked = write_records(&leader, CLIENTS, EACH, RECORD, 0).await;
    assert!((CLIENTS * EACH * RECORD) as u64 > 3 * SMALL / 2);

    let small = &nodes[1];
    let running = small.raft().metrics().borrow().running_state.clone();
    assert!(running.is_ok(), "node 3 stopped: {running:?}");
    // (The leader's next batch for node 3 may still be on its way, or waiting for room.)
    let m = until("node 3 to cut a batch", || async {
        let m = c.metrics(small).await;
        (m["log"]["batches_cut"].as_u64().unwrap() > 0).then_some(m)
    })
    .await;
    let last = m["last_log_index"].as_u64().expect("node 3 has entries");
    let leader_last = c.metrics(&leader).await["last_log_index"].as_u64().unwrap();
    assert!(last < leader_last, "node 3 did not lag: {m}");
    assert!(
        m["log"]["used_bytes"].as_u64().unwrap() > SMALL * 3 / 4,
        "node 3's log is not nearly full: {m}"
    );
    assert!(m["purged"].is_null(), "node 3 purged: {m}");

    // Node 3 snapshots and purges (as its log pressure would), until it has caught up.
    let raft = small.raft().clone();
    until("node 3 caught up", || {
        let raft = raft.clone();
        async move {
            let (applied, snapshot, last) = {
                let m = raft.metrics();
                let m = m.borrow();
                (
                    m.last_applied.map(|l| l.index),
                    m.snapshot.map(|l| l.index),
                    m.last_log_index,
                )
            };
            if last == Some(leader_last) {
                return Some(());
            }
            if applied > snapshot {
                raft.trigger().snapshot().await.unwrap();
            } else if let Some(s) = snapshot {
                raft.trigger().purge_log(s).await.unwrap();
            }
            None
        }
    })
    .await;
    journals_hold(&c, &leader, &nodes, &acked).await;
    let running = small.raft().metrics().borrow().running_state.clone();
    assert!(running.is_ok(), "node 3 stopped: {running:?}");
    shutdown_after_clients(leader, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_beside_a_follower_that_cannot_take_them() {
    bounded(follower_too_small()).await;
}

/// Node 3's log is smaller than one of the leader's writes, so it can never take the leader's
/// entries: it refuses them (`503`) and stays up, a follower of the same leader (it hears from
/// it, and starts no election). The leader and node 2 commit writes of twice
/// the leader's log, which the leader must purge meanwhile: openraft does not purge entries a
/// replication holds, and a follower that answered "none taken" again and again would hold
/// them for good (the leader's log would fill, and every write be refused `log_full`).
async fn follower_too_small() {
    const BIG: u64 = 4 << 20;
    const SMALL: u64 = 128 << 10;
    const RECORD: usize = 160 << 10;
    const EACH: usize = 26;
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let opts = |id| NodeOptions {
        log_capacity: if id == 3 { SMALL } else { BIG },
        ..options(id, dir.path())
    };
    let mut nodes = voters3(&c, opts).await;
    let term = c.metrics(&nodes[0]).await["current_term"].clone();

    let leader = std::sync::Arc::new(nodes.remove(0));
    // (`log_full` while the leader snapshots and purges.)
    let acked = write_records(&leader, 2, EACH, RECORD, 2_000).await;
    assert!((acked.len() * RECORD) as u64 > 2 * BIG);

    let small = &nodes[1];
    let running = small.raft().metrics().borrow().running_state.clone();
    assert!(running.is_ok(), "node 3 stopped: {running:?}");
    let m = c.metrics(small).await;
    assert!(m["log"]["batches_cut"].as_u64().unwrap() > 0, "{m}");
    let lm = c.metrics(&leader).await;
    assert!(
        lm["purged"].as_u64().is_some(),
        "the leader never purged: {lm}"
    );
    assert!(
        m["last_log_index"].as_u64() < lm["last_log_index"].as_u64(),
        "node 3 took entries larger than its log: {m}"
    );
    // Refused again and again, node 3 still hears from its leader: it starts no election
    // (whose higher term would depose the leader).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in std::iter::once(&*leader).chain(&nodes) {
        let m = c.metrics(n).await;
        assert_eq!(
            (&m["current_term"], &m["current_leader"]),
            (&term, &json!(1)),
            "{m}"
        );
        assert_ne!(m["state"], "Candidate", "{m}");
    }
    journals_hold(&c, &leader, &nodes[..1], &acked).await;
    shutdown_after_clients(leader, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_waiting_for_an_entry_stay_admitted() {
    bounded(admitted_while_waiting()).await;
}

/// A leader cut off from the majority, with clients that keep writing: every write times out
/// (`503 timeout`), and the clients write again. The writes still waiting for a Raft entry must
/// keep their bytes admitted until their entry is in the log: else the leader's log fills
/// behind the admission's back, its log store's `append` fails, and openraft stops the node.
/// The leader must answer `503 log_full` instead, and stay up.
async fn admitted_while_waiting() {
    const CAPACITY: u64 = 1 << 20;
    const RECORD: usize = 16 << 10;
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let opts = |id| NodeOptions {
        log_capacity: CAPACITY,
        request_timeout: Duration::from_millis(400),
        writes_in_flight: 4,
        test_hooks: true,
        ..options(id, dir.path())
    };
    let mut nodes = voters3(&c, opts).await;
    let (status, v) = c
        .post(&nodes[0], "/test/partition", json!({"blocked": [2, 3]}))
        .await;
    assert_eq!(status, 200, "{v}");

    let leader = std::sync::Arc::new(nodes.remove(0));
    let until_t = Instant::now() + Duration::from_secs(6);
    let mut tasks = Vec::new();
    for t in 0..24u8 {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            let mut answers = std::collections::BTreeMap::<String, u32>::new();
            while Instant::now() < until_t {
                let (status, v) = c.append(&leader, &vec![t; RECORD]).await;
                *answers
                    .entry(format!("{status} {}", v["error"]))
                    .or_default() += 1;
                if status == 503 && v["error"] == "log_full" {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            answers
        }));
    }
    let mut answers = std::collections::BTreeMap::<String, u32>::new();
    for task in tasks {
        for (k, n) in task.await.unwrap() {
            *answers.entry(k).or_default() += n;
        }
    }
    let running = leader.raft().metrics().borrow().running_state.clone();
    assert!(
        running.is_ok(),
        "the leader stopped: {running:?}; answers {answers:?}"
    );
    assert!(
        answers.contains_key("503 \"log_full\""),
        "the log never counted as full: {answers:?}"
    );
    assert!(
        !answers.contains_key("503 \"unavailable\""),
        "answers {answers:?}"
    );
    let leader = std::sync::Arc::into_inner(leader).expect("the clients are done");
    nodes.insert(0, leader);
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ids_at_one_address_make_no_quorum() {
    bounded(two_ids_at_one_address()).await;
}

/// Node ids 9 and 10 given node 2's address: `/admin/add-learner` refuses them (the address
/// answers as node 2), a peer RPC addressed to another id is refused unprocessed, and with 9
/// and 10 made voters anyway (through openraft's API) and nodes 1 and 3 down, node 2 is not
/// elected on the votes its own server would have given for them.
async fn two_ids_at_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let quick = |id| quick_options(id, dir.path());
    let mut nodes = voters3(&c, quick).await;
    let n2_addr = nodes[1].addr().to_string();

    for id in [9, 10] {
        let learner = json!({"id": id, "addr": n2_addr});
        let (status, v) = c.post(&nodes[0], "/admin/add-learner", learner).await;
        assert_eq!((status, &v["error"]), (409, &json!("wrong_node")), "{v}");
    }
    let learners = c.metrics(&nodes[0]).await["membership"]["learners"].clone();
    assert_eq!(learners, json!([]), "{learners}");

    // A vote addressed to node 9 reaches node 2's server: refused, not counted.
    let vote = VoteRequest::<NodeId>::new(Vote::new(99, 1), None);
    let resp = c
        .http
        .post(format!("http://{}{VOTE_PATH}", nodes[1].addr()))
        .header(FROM_HEADER, 1)
        .header("x-daxlog-raft-to", 9)
        .body(encode(&vote).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 421, "{text}");
    assert!(text.contains("node 2, not node 9"), "{text}");
    assert!(c.metrics(&nodes[1]).await["current_term"].as_u64() < Some(99));

    // Made voters through openraft's API, 9 and 10 are in the membership at node 2's address.
    let raft = nodes[0].raft().clone();
    for id in [9, 10] {
        raft.add_learner(id, openraft::BasicNode::new(n2_addr.clone()), false)
            .await
            .unwrap();
    }
    let change = tokio::spawn(async move {
        raft.change_membership(std::collections::BTreeSet::from([1, 2, 3, 9, 10]), false)
            .await
    });
    tokio::time::timeout(WAIT, change)
        .await
        .expect("membership change in time")
        .unwrap()
        .unwrap();
    let n3 = nodes.pop().unwrap();
    let n1 = nodes.remove(0);
    shutdown(vec![n1, n3]).await;
    // Ten election timeouts: node 2 alone is never leader.
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let m = c.metrics(&nodes[0]).await;
        assert_ne!(m["state"], "Leader", "node 2 elected without a quorum: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_clusters_never_merge() {
    bounded(separate_clusters()).await;
}

/// A voter whose directory was wiped and that is started again with `--init` is a cluster of
/// its own: it never follows the old cluster's leader (whose term is higher) nor takes its
/// entries; and `/admin/add-learner` refuses a node that belongs to another cluster.
async fn separate_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let quick = |id| quick_options(id, dir.path());
    let mut nodes = voters3(&c, quick).await;
    let (status, v) = c.append(&nodes[0], b"real 1").await;
    assert_eq!(status, 200, "{v}");
    let n3 = nodes.pop().unwrap();
    let n3_addr = n3.addr();
    shutdown(vec![n3]).await;
    std::fs::remove_dir_all(dir.path().join("node-3")).unwrap();
    // A later term, which a new single-node cluster (term 1) would follow.
    nodes[1].raft().trigger().elect().await.unwrap();
    let leader = until("a leader in a later term", || async {
        for (i, n) in nodes.iter().enumerate() {
            let m = c.metrics(n).await;
            let leads = m["state"] == "Leader" && m["current_leader"] == json!(n.id());
            if leads && m["current_term"].as_u64() > Some(1) {
                return Some(i);
            }
        }
        None
    })
    .await;
    let (status, v) = c.append(&nodes[leader], b"real 2").await;
    assert_eq!(status, 200, "{v}");

    let n3 = Node::start(NodeOptions {
        init: true,
        listen: n3_addr.to_string(),
        ..quick(3)
    })
    .await
    .unwrap();
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        let m = c.metrics(&n3).await;
        assert_ne!(
            m["current_leader"],
            json!(nodes[leader].id()),
            "node 3 follows the old cluster: {m}"
        );
        let (_, journal, _) = c.journal(&n3, "from=0&local=true").await;
        assert!(journal.is_empty(), "node 3 took the old cluster's records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old cluster goes on with nodes 1 and 2.
    let (status, v) = c.append(&nodes[leader], b"real 3").await;
    assert_eq!(status, 200, "{v}");

    // A node of another cluster is not taken as a learner.
    let n4 = Node::start(NodeOptions {
        init: true,
        ..quick(4)
    })
    .await
    .unwrap();
    wait_leader(&c, &n4).await;
    let learner = json!({"id": 4, "addr": n4.addr().to_string()});
    let (status, v) = c.post(&nodes[leader], "/admin/add-learner", learner).await;
    assert_eq!((status, &v["error"]), (409, &json!("other_cluster")), "{v}");
    let learners = c.metrics(&nodes[leader]).await["membership"]["learners"].clone();
    assert_eq!(learners, json!([]), "{learners}");
    nodes.push(n3);
    nodes.push(n4);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_refused_where_the_cluster_id_was_adopted() {
    bounded(init_refused_on_an_adopted_id()).await;
}

/// `--init` on a node that adopted its cluster id. Once the node holds its leader's vote
/// (the leader's first `AppendEntries` saves it, entries or not) its store counts as
/// initialized and `--init` does nothing. A node that adopted the id and stopped before that
/// (the id is stored before openraft sees the request) has an uninitialized store, and
/// refuses `--init`: a cluster of its own would be a second one under that id. A node that
/// made its id with `--init` and stopped before the first entry takes it again.
async fn init_refused_on_an_adopted_id() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let init = |id| NodeOptions {
        init: true,
        ..options(id, dir.path())
    };
    let n5 = Node::start(options(5, dir.path())).await.unwrap();
    let cluster = "0123456789abcdef0123456789abcdef";
    let rpc = openraft::raft::AppendEntriesRequest::<daxlog_raft::TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let resp = c
        .http
        .post(format!(
            "http://{}{}",
            n5.addr(),
            daxlog_raft::http::APPEND_ENTRIES_PATH
        ))
        .header(FROM_HEADER, 1)
        .header(daxlog_raft::http::CLUSTER_HEADER, cluster)
        .body(encode(&rpc).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let follows = |m: &Value| {
        assert_eq!(m["cluster_id"], json!(cluster), "{m}");
        assert_eq!(m["current_leader"], json!(1), "{m}");
        assert_eq!(m["membership"]["voters"], json!([]), "{m}");
    };
    follows(&c.metrics(&n5).await);
    shutdown(vec![n5]).await;
    let n5 = Node::start(init(5)).await.unwrap();
    follows(&c.metrics(&n5).await);
    shutdown(vec![n5]).await;

    // Adopted, then stopped before openraft took the request: no vote, no log.
    shutdown(vec![Node::start(options(7, dir.path())).await.unwrap()]).await;
    let n7_dir = dir.path().join("node-7");
    std::fs::write(n7_dir.join("cluster.id"), format!("{cluster}\nadopted\n")).unwrap();
    let e = match Node::start(init(7)).await {
        Ok(_) => panic!("--init made a cluster under an adopted id"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&format!("joined cluster {cluster}")), "{e}");
    // Without `--init` the node waits to hear from its cluster, as before.
    let n7 = Node::start(options(7, dir.path())).await.unwrap();
    let m = c.metrics(&n7).await;
    assert_eq!(m["cluster_id"], json!(cluster), "{m}");
    assert_eq!(m["membership"]["voters"], json!([]), "{m}");
    shutdown(vec![n7]).await;

    // An id made by `--init` whose cluster has no entry yet is taken again.
    shutdown(vec![Node::start(options(6, dir.path())).await.unwrap()]).await;
    let n6_dir = dir.path().join("node-6");
    let made = "fedcba9876543210fedcba9876543210";
    std::fs::write(n6_dir.join("cluster.id"), format!("{made}\n")).unwrap();
    let n6 = Node::start(init(6)).await.unwrap();
    wait_leader(&c, &n6).await;
    assert_eq!(c.metrics(&n6).await["cluster_id"], json!(made));
    shutdown(vec![n6]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_data_grants_no_vote() {
    bounded(no_vote_without_data()).await;
}

/// A node started on an empty directory (it may be a voter that lost its files) answers a
/// vote request of a candidate of a cluster with an id "not granted", with its own vote; a
/// candidate of a cluster without one (an earlier version's, or openraft's `initialize` of
/// several members) gets its vote as before.
async fn no_vote_without_data() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n5 = Node::start(options(5, dir.path())).await.unwrap();
    let ask = |cluster, term| {
        let vote = VoteRequest::<NodeId>::new(Vote::new(term, 1), None);
        let c = &c;
        let n5 = &n5;
        async move {
            let (status, body) =
                raw_rpc(c, n5, VOTE_PATH, 1, cluster, encode(&vote).unwrap()).await;
            assert_eq!(status, 200);
            let answer: Result<
                openraft::raft::VoteResponse<NodeId>,
                openraft::error::RaftError<NodeId>,
            > = daxlog_raft::http::decode(&body).unwrap();
            answer.unwrap()
        }
    };
    let answer = ask(Some("0123456789abcdef0123456789abcdef"), 1).await;
    assert!(!answer.vote_granted, "{answer:?}");
    assert!(answer.vote < Vote::new(1, 1), "{answer:?}");
    assert_eq!(c.metrics(&n5).await["current_term"], json!(0));
    let answer = ask(None, 2).await;
    assert!(answer.vote_granted, "{answer:?}");
    shutdown(vec![n5]).await;
}

/// A peer RPC to `path` with this body, sender and cluster id: its status and raw answer.
async fn raw_rpc(
    c: &Client,
    node: &Node,
    path: &str,
    from: NodeId,
    cluster: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = c
        .http
        .post(format!("http://{}{path}", node.addr()))
        .header(FROM_HEADER, from);
    if let Some(cluster) = cluster {
        req = req.header(daxlog_raft::http::CLUSTER_HEADER, cluster);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap_or_default().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_takes_the_capacity_of_the_log_file() {
    bounded(capacity_of_the_file()).await;
}

/// A node made with a 1 MiB log and restarted without `log_capacity` (the default, 64 MiB)
/// sizes its admission by the file it opened: writes are taken, not refused `log_full`.
async fn capacity_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = Node::start(NodeOptions {
        init: true,
        log_capacity: 1 << 20,
        ..options(1, dir.path())
    })
    .await
    .unwrap();
    wait_leader(&c, &n1).await;
    let (status, v) = c.append(&n1, b"before").await;
    assert_eq!(status, 200, "{v}");
    shutdown(vec![n1]).await;
    let n1 = Node::start(options(1, dir.path())).await.unwrap();
    wait_leader(&c, &n1).await;
    let (status, v) = c.append(&n1, &[7u8; 1024]).await;
    assert_eq!(status, 200, "{v}");
    shutdown(vec![n1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_bounded_by_bytes() {
    bounded(read_budget()).await;
}

/// Six records of 1 MiB: one `/read` returns fewer than all of them (at least one), and
/// reading on from the last index + 1 returns the rest.
async fn read_budget() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = Node::start(NodeOptions {
        init: true,
        ..options(1, dir.path())
    })
    .await
    .unwrap();
    wait_leader(&c, &n1).await;
    let mut written = Vec::new();
    for i in 0..6u8 {
        let data = vec![i; 1 << 20];
        let (status, v) = c.append(&n1, &data).await;
        assert_eq!(status, 200, "{v}");
        written.push((v["index"].as_u64().unwrap(), data));
    }
    let mut read = Vec::new();
    let mut from = 0;
    let mut pages = 0;
    while read.len() < written.len() {
        let (status, v) = c.get(&n1, &format!("/read?from={from}&max=1000")).await;
        assert_eq!(status, 200);
        let page: Vec<(u64, Vec<u8>)> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let data = hex::decode(e["data_hex"].as_str().unwrap()).unwrap();
                (e["index"].as_u64().unwrap(), data)
            })
            .collect();
        assert!(!page.is_empty(), "a page of no record at {from}");
        assert!(page.len() < 6, "{} MiB in one answer", page.len());
        from = page.last().unwrap().0 + 1;
        read.extend(page);
        pages += 1;
    }
    assert!(pages >= 2);
    assert_eq!(read, written);
    shutdown(vec![n1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_listen_leaves_no_directory() {
    bounded(cannot_listen()).await;
}

/// A listen address that is invalid or in use fails the start before the node's directory
/// is made.
async fn cannot_listen() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    for listen in ["not an address", busy_addr.as_str()] {
        let e = Node::start(NodeOptions {
            init: true,
            listen: listen.to_string(),
            ..options(1, dir.path())
        })
        .await
        .err()
        .expect("the start fails");
        assert!(e.to_string().contains("cannot listen on"), "{e}");
        assert!(
            !dir.path().join("node-1").exists(),
            "{listen}: directory made"
        );
    }
    // A data directory that is a file: the error names it.
    let file = dir.path().join("node-2");
    std::fs::write(&file, "").unwrap();
    let e = Node::start(options(2, dir.path()))
        .await
        .err()
        .expect("a file is no directory");
    assert!(e.to_string().contains("is not a directory"), "{e}");
    assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_mean_nothing_are_refused() {
    bounded(meaningless_requests()).await;
}

/// `remove-nodes` of no id is refused, typed; of ids none of which is a member answers 200
/// with the membership in force and writes nothing (so a request repeated after its change was
/// committed gets its 200), on the leader only (a follower's membership may be stale); a
/// learner at no address, or a voter added as a learner, is refused and writes nothing; a
/// heartbeat interval of 0 fails the start.
async fn meaningless_requests() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let e = Node::start(NodeOptions {
        heartbeat_ms: 0,
        ..options(2, dir.path())
    })
    .await
    .err()
    .expect("heartbeat 0 refused");
    assert!(e.to_string().contains("heartbeat"), "{e}");
    let n1 = Node::start(NodeOptions {
        init: true,
        ..options(1, dir.path())
    })
    .await
    .unwrap();
    wait_leader(&c, &n1).await;
    let before = c.metrics(&n1).await["last_log_index"].clone();
    let (status, v) = c.post(&n1, "/admin/remove-nodes", json!({"ids": []})).await;
    assert_eq!((status, &v["error"]), (400, &json!("bad_request")), "{v}");
    let (status, v) = c
        .post(&n1, "/admin/remove-nodes", json!({"ids": [42]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["not_members"], json!([42]), "{v}");
    for (learner, error) in [
        (json!({"id": 7, "addr": ""}), (400, "bad_request")),
        (json!({"id": 7, "addr": "127.0.0.1"}), (400, "bad_request")),
        (
            json!({"id": 7, "addr": "127.0.0.1:0"}),
            (400, "bad_request"),
        ),
        (json!({"id": 7, "addr": "[::1:7001"}), (400, "bad_request")),
        (
            json!({"id": 7, "addr": "http://h:7001"}),
            (400, "bad_request"),
        ),
        (json!({"id": 1, "addr": "127.0.0.1:9"}), (409, "membership")),
    ] {
        let (status, v) = c.post(&n1, "/admin/add-learner", learner.clone()).await;
        assert_eq!(
            (status, v["error"].as_str().unwrap()),
            error,
            "{learner}: {v}"
        );
    }
    assert_eq!(c.metrics(&n1).await["last_log_index"], before);
    // A learner removed, then the same request again: 200 both times, one entry written.
    let n2 = Node::start(options(2, dir.path())).await.unwrap();
    let (status, v) = c
        .post(
            &n1,
            "/admin/add-learner",
            json!({"id": 2, "addr": n2.addr().to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, first) = c
        .post(&n1, "/admin/remove-nodes", json!({"ids": [2]}))
        .await;
    assert_eq!(status, 200, "{first}");
    let written = c.metrics(&n1).await["last_log_index"].clone();
    let (status, again) = c
        .post(&n1, "/admin/remove-nodes", json!({"ids": [2]}))
        .await;
    assert_eq!((status, &again["index"]), (200, &first["index"]), "{again}");
    assert_eq!(c.metrics(&n1).await["last_log_index"], written);
    // Not the leader: 421 before any look at its own membership.
    for ids in [json!([2]), json!([42]), json!([1])] {
        let (status, v) = c
            .post(&n2, "/admin/remove-nodes", json!({ "ids": ids }))
            .await;
        assert_eq!((status, &v["error"]), (421, &json!("not_leader")), "{v}");
    }
    shutdown(vec![n1, n2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_of_several_members_elects_a_leader() {
    bounded(initialize_of_several_members()).await;
}

/// openraft's own bootstrap, `initialize` of all members on one node, the others new: such a
/// cluster has no id, and its new members' votes count (a new node refuses its vote only to
/// candidates of a cluster with an id).
async fn initialize_of_several_members() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::start(options(id, dir.path())).await.unwrap());
    }
    let members: std::collections::BTreeMap<NodeId, openraft::BasicNode> = nodes
        .iter()
        .map(|n| (n.id(), openraft::BasicNode::new(n.addr().to_string())))
        .collect();
    nodes[0].raft().initialize(members).await.unwrap();
    until("a leader", || async {
        for n in &nodes {
            let m = c.metrics(n).await;
            if m["state"] == "Leader" {
                return Some(());
            }
        }
        None
    })
    .await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_leader_changed_is_unknown() {
    bounded(leader_changed()).await;
}

/// A write and a membership change proposed on a leader cut off from its followers: once
/// healed, the leader follows the new one, whose log replaces its uncommitted entries. Both
/// are answered as unknown (`503 leader_changed`), not as never proposed (`421`): in a
/// larger cluster another node holding the entry could still commit it.
async fn leader_changed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let nodes = voters3(&c, |id| options(id, dir.path())).await;
    let n1 = std::sync::Arc::new(nodes.into_iter().collect::<Vec<_>>());
    n1[0].partition().set([2, 3]);
    n1[1].partition().set([1]);
    n1[2].partition().set([1]);
    let proposer = n1.clone();
    let write = tokio::spawn(async move {
        let c = Client::new();
        c.append(&proposer[0], b"cut off").await
    });
    let proposer = n1.clone();
    let change = tokio::spawn(async move {
        let c = Client::new();
        let voters = json!({"voters": [1, 2]});
        c.post(&proposer[0], "/admin/change-membership", voters)
            .await
    });
    let new_leader = until("a leader among nodes 2 and 3", || async {
        for i in [1, 2] {
            let m = c.metrics(&n1[i]).await;
            if m["state"] == "Leader" && m["current_leader"] == json!(n1[i].id()) {
                return Some(i);
            }
        }
        None
    })
    .await;
    let (status, v) = c.append(&n1[new_leader], b"majority").await;
    assert_eq!(status, 200, "{v}");
    // The cut-off node still says it leads, with the old membership: it answers nothing
    // from it without a quorum (node 42 was never a member; node 3 is a voter).
    for (path, body) in [
        ("/admin/remove-nodes", json!({"ids": [42]})),
        (
            "/admin/add-learner",
            json!({"id": 3, "addr": "127.0.0.1:9"}),
        ),
        ("/truncate", json!({"before": 1000})),
    ] {
        let (status, v) = c.post(&n1[0], path, body).await;
        assert_eq!(status, 503, "{path}: {v}");
        assert_eq!(v["error"], "unavailable", "{path}: {v}");
    }
    for n in n1.iter() {
        n.partition().set([]);
    }
    for proposal in [write, change] {
        let (status, v) = tokio::time::timeout(WAIT, proposal).await.unwrap().unwrap();
        assert_eq!(
            (status, &v["error"]),
            (503, &json!("leader_changed")),
            "{v}"
        );
    }
    // A node that is not leading proposes nothing: `421`.
    until("node 1 follows", || async {
        let m = c.metrics(&n1[0]).await;
        (m["state"] != "Leader").then_some(())
    })
    .await;
    let (status, v) = c
        .post(
            &n1[0],
            "/admin/change-membership",
            json!({"voters": [1, 2]}),
        )
        .await;
    assert_eq!((status, &v["error"]), (421, &json!("not_leader")), "{v}");
    let nodes = std::sync::Arc::into_inner(n1).unwrap();
    shutdown(nodes).await;
}

/// A log id of leader `(term, 1)` at `index`.
fn lid(term: u64, index: u64) -> openraft::LogId<NodeId> {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
}

/// An `AppendEntries` of leader `(vote_term, 1)` with entries at these `(term, index)`.
fn forged_append(
    vote_term: u64,
    prev: Option<openraft::LogId<NodeId>>,
    entries: &[(u64, u64)],
) -> Vec<u8> {
    let rpc = openraft::raft::AppendEntriesRequest::<daxlog_raft::TypeConfig> {
        vote: Vote::new_committed(vote_term, 1),
        prev_log_id: prev,
        leader_commit: None,
        entries: entries
            .iter()
            .map(|&(term, index)| openraft::Entry {
                log_id: lid(term, index),
                payload: openraft::EntryPayload::Normal(daxlog_raft::Request::Append {
                    data: format!("forged-{index}").into_bytes(),
                }),
            })
            .collect(),
    };
    encode(&rpc).unwrap()
}

/// An `InstallSnapshot` chunk of leader `(vote_term, 1)`.
fn forged_chunk(
    vote_term: u64,
    last: openraft::LogId<NodeId>,
    offset: u64,
    data: Vec<u8>,
    done: bool,
) -> Vec<u8> {
    let chunk = openraft::raft::InstallSnapshotRequest::<daxlog_raft::TypeConfig> {
        vote: Vote::new_committed(vote_term, 1),
        meta: openraft::SnapshotMeta {
            last_log_id: Some(last),
            last_membership: Default::default(),
            snapshot_id: "forged".into(),
        },
        offset,
        data,
        done,
    };
    encode(&chunk).unwrap()
}

/// Asserts that a peer RPC was refused `400` with an error of `kind`.
fn assert_refused((status, body): (u16, Vec<u8>), kind: &str) {
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{text}");
    assert!(text.starts_with(&format!("{kind}: ")), "{text}");
}

/// Starts node 1, initializing a cluster, and waits for it to lead; writes one record.
async fn one_leader(c: &Client, dir: &std::path::Path) -> Node {
    let n1 = Node::start(NodeOptions {
        init: true,
        ..options(1, dir)
    })
    .await
    .unwrap();
    wait_leader(c, &n1).await;
    let (status, v) = c.append(&n1, b"one").await;
    assert_eq!(status, 200, "{v}");
    n1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_entries_out_of_order_are_refused() {
    bounded(entries_out_of_order()).await;
}

/// An `AppendEntries` whose entries do not follow its `prev_log_id` one by one (a hole, an
/// index repeated, a first entry that is not the next index), whose terms decrease, or of a
/// later term than its vote, is refused `400` before openraft sees it: openraft only
/// debug-asserts the order, and the log store's refusal of the append stopped the node.
async fn entries_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = one_leader(&c, dir.path()).await;
    let m = c.metrics(&n1).await;
    let term = m["current_term"].as_u64().unwrap();
    let last = m["last_log_index"].as_u64().unwrap();
    let prev = Some(lid(term, last));
    for (body, kind) in [
        // A hole after the last entry.
        (
            forged_append(term, prev, &[(term, last + 2)]),
            "not_consecutive",
        ),
        // An index repeated.
        (
            forged_append(term, prev, &[(term, last + 1), (term, last + 1)]),
            "not_consecutive",
        ),
        // Without a previous log id, the first entry is at index 0.
        (forged_append(term, None, &[(term, 1)]), "not_consecutive"),
        (
            forged_append(term + 1, prev, &[(term + 1, last + 1), (term, last + 2)]),
            "terms_decrease",
        ),
        (
            forged_append(term, prev, &[(term + 1, last + 1)]),
            "term_above_vote",
        ),
    ] {
        let answer = raw_rpc(&c, &n1, APPEND_ENTRIES_PATH, 2, None, body).await;
        assert_refused(answer, kind);
    }
    // The node goes on.
    still_leads(&c, &n1, term).await;
    shutdown(vec![n1]).await;
}

/// Node `n` leads in `term` and takes a write (`two`): nothing a refused RPC held was taken.
async fn still_leads(c: &Client, n: &Node, term: u64) {
    let (status, v) = c.append(n, b"two").await;
    assert_eq!(status, 200, "{v}");
    let m = c.metrics(n).await;
    assert_eq!(
        (&m["state"], &m["current_term"]),
        (&json!("Leader"), &json!(term)),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_and_indexes_no_cluster_reaches_are_refused() {
    bounded(out_of_range()).await;
}

/// A vote or log id of a term or index above 2^62, in an `AppendEntries` (a heartbeat), a
/// `Vote` or an `InstallSnapshot` (its vote, its snapshot's meta), is refused `400`: a vote
/// of term `u64::MAX`, once saved, made the next election's term wrap and openraft panic.
async fn out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = one_leader(&c, dir.path()).await;
    let term = c.metrics(&n1).await["current_term"].as_u64().unwrap();
    let huge = u64::MAX;
    let vote = |term, last| encode(&VoteRequest::<NodeId>::new(Vote::new(term, 2), last)).unwrap();
    for (path, body) in [
        (APPEND_ENTRIES_PATH, forged_append(huge, None, &[])),
        (
            APPEND_ENTRIES_PATH,
            forged_append(term, Some(lid(term, huge)), &[]),
        ),
        (VOTE_PATH, vote(huge, None)),
        (VOTE_PATH, vote(term + 1, Some(lid(term, huge)))),
        (
            INSTALL_SNAPSHOT_PATH,
            forged_chunk(huge, lid(term, 1), 0, vec![1], false),
        ),
        (
            INSTALL_SNAPSHOT_PATH,
            forged_chunk(term, lid(term, huge), 0, vec![1], false),
        ),
    ] {
        let answer = raw_rpc(&c, &n1, path, 2, None, body).await;
        assert_refused(answer, "out_of_range");
    }
    still_leads(&c, &n1, term).await;
    shutdown(vec![n1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_does_not_decode_is_refused() {
    bounded(undecodable_snapshot()).await;
}

/// A snapshot whose last chunk completes data that does not decode (alone, or after a first
/// chunk) is refused `400` before openraft takes it: handed to the state machine, its failure
/// left openraft's core hung, the follower up but never applying again.
async fn undecodable_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = one_leader(&c, dir.path()).await;
    let n2 = Node::start(options(2, dir.path())).await.unwrap();
    let (status, v) = c
        .post(
            &n1,
            "/admin/add-learner",
            json!({"id": 2, "addr": n2.addr().to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let m = c.metrics(&n1).await;
    let term = m["current_term"].as_u64().unwrap();
    let last = lid(term, m["last_log_index"].as_u64().unwrap() + 1000);
    let whole = forged_chunk(term, last, 0, vec![0xAB; 16], true);
    assert_refused(
        raw_rpc(&c, &n2, INSTALL_SNAPSHOT_PATH, 1, None, whole).await,
        "bad_snapshot",
    );
    // In two chunks: the first is taken, the last refused.
    let first = forged_chunk(term, last, 0, vec![0x01; 8], false);
    let (status, body) = raw_rpc(&c, &n2, INSTALL_SNAPSHOT_PATH, 1, None, first).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rest = forged_chunk(term, last, 8, vec![0xAB; 8], true);
    assert_refused(
        raw_rpc(&c, &n2, INSTALL_SNAPSHOT_PATH, 1, None, rest).await,
        "bad_snapshot",
    );
    // The learner still applies its leader's entries.
    let (status, v) = c.append(&n1, b"two").await;
    assert_eq!(status, 200, "{v}");
    let applied = c.metrics(&n1).await["last_applied"].as_u64().unwrap();
    wait_applied(&c, &n2, applied).await;
    let (_, journal, _) = c.journal(&n2, "from=0&local=true").await;
    let data: Vec<_> = journal.into_iter().map(|(_, d)| d).collect();
    assert_eq!(data, [b"one".to_vec(), b"two".to_vec()]);
    shutdown(vec![n1, n2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_append_body_is_a_bad_request() {
    bounded(unreadable_body()).await;
}

/// An `/append` whose body cannot be read (a malformed chunk size) is answered
/// `400 unreadable_body`, not `413 too_large`; the node goes on.
async fn unreadable_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let n1 = one_leader(&c, dir.path()).await;
    let mut conn = tokio::net::TcpStream::connect(n1.addr()).await.unwrap();
    conn.write_all(
        b"POST /append HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""error":"unreadable_body""#), "{answer}");
    let (status, v) = c.append(&n1, b"two").await;
    assert_eq!(status, 200, "{v}");
    shutdown(vec![n1]).await;
}
