//! `daxlog-raft-node` processes on loopback, driven over their HTTP API as clients and an
//! operator would drive them:
//!
//! * [`leader_killed_mid_stream`]: client threads append while the leader is killed (SIGKILL),
//!   stays down until the new leader has purged the log it would need (so it catches up from a
//!   snapshot), and comes back; then a follower is killed for a few appends only (it catches up
//!   from the log). The journals are then checked against what the clients were told
//!   ([`check_history`]).
//! * [`minority_partition_acknowledges_nothing`]: a leader cut off from both followers
//!   (`--test-hooks`, `POST /test/partition`) acknowledges no append and serves no
//!   linearizable read, while the majority elects a leader and goes on; after healing, the old
//!   leader's journal is the majority's.
//! * [`linearizable_reads_after_a_whole_cluster_crash`]: every node killed at once after a
//!   burst of appends; the old leader, restored as leader in its term, and one follower come
//!   back: every linearizable read the old leader answers shows every acknowledged append.
//! * [`a_node_whose_raft_stops_exits_with_the_reason`]: a snapshot that cannot be written
//!   stops a node's Raft; the process exits with a failure and says why.
//!
//! Every wait has a deadline; every node process is killed when its test ends, whichever way
//! it ends; on a failure, the tail of each node's stderr is printed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const NODE: &str = env!("CARGO_BIN_EXE_daxlog-raft-node");

/// How long a node may take from spawn to its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one metrics or journal request.
const QUICK_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of an admin request (add-learner blocks until the learner has caught up).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client on std's TcpStream.

/// A response: status code and body.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection at a time, to whichever address was asked last. A request that
/// fails in any way drops its connection and is never sent again: the caller decides whether
/// to make a new attempt.
#[derive(Default)]
struct Http {
    conn: Option<(SocketAddr, BufReader<TcpStream>)>,
}

impl Http {
    /// Sends one request and reads its response, all within `timeout` (the connect within
    /// at most 1 s of it). `body` is the content type and the bytes.
    fn call(
        &mut self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> io::Result<Reply> {
        let deadline = Instant::now() + timeout;
        let mut conn = match self.conn.take() {
            Some((a, conn)) if a == addr => conn,
            _ => {
                let stream =
                    TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(1)))?;
                stream.set_nodelay(true)?;
                BufReader::new(stream)
            }
        };
        let (reply, keep) = exchange(&mut conn, addr, method, path, body, deadline)?;
        if keep {
            self.conn = Some((addr, conn));
        }
        Ok(reply)
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
    } else {
        Ok(left)
    }
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn read_line(conn: &mut BufReader<TcpStream>, deadline: Instant) -> io::Result<String> {
    conn.get_ref()
        .set_read_timeout(Some(remaining(deadline)?))?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_exact(conn: &mut BufReader<TcpStream>, n: usize, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        conn.get_ref()
            .set_read_timeout(Some(remaining(deadline)?))?;
        match conn.read(&mut buf[got..])? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in a response body",
                ))
            }
            k => got += k,
        }
    }
    Ok(buf)
}

/// Writes one request and reads its response; tells whether the connection may be used again.
fn exchange(
    conn: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    deadline: Instant,
) -> io::Result<(Reply, bool)> {
    let (content_type, bytes) = body.unwrap_or(("application/octet-stream", &[]));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        bytes.len()
    );
    if body.is_some() {
        let _ = write!(request, "Content-Type: {content_type}\r\n");
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(bytes);
    conn.get_ref()
        .set_write_timeout(Some(remaining(deadline)?))?;
    conn.get_mut().write_all(&request)?;

    let status_line = read_line(conn, deadline)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| protocol_error(format!("bad status line {status_line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        let header = read_line(conn, deadline)?;
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(protocol_error(format!("bad header line {header:?}")));
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| protocol_error(format!("bad content-length {value:?}")))?,
                )
            }
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let size_line = read_line(conn, deadline)?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| protocol_error(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !read_line(conn, deadline)?.is_empty() {}
                break;
            }
            body.extend(read_exact(conn, size, deadline)?);
            read_line(conn, deadline)?;
        }
        body
    } else if let Some(n) = length {
        read_exact(conn, n, deadline)?
    } else {
        close = true;
        let mut body = Vec::new();
        conn.get_ref()
            .set_read_timeout(Some(remaining(deadline)?))?;
        conn.read_to_end(&mut body)?;
        body
    };
    Ok((Reply { status, body }, !close))
}

/// One request on a connection of its own.
fn call_once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> io::Result<Reply> {
    Http::default().call(addr, method, path, body, timeout)
}

fn post_json(addr: SocketAddr, path: &str, body: &Value, timeout: Duration) -> io::Result<Reply> {
    let bytes = body.to_string().into_bytes();
    call_once(
        addr,
        "POST",
        path,
        Some(("application/json", &bytes)),
        timeout,
    )
}

// ------------------------------------------------------------------------------------------
// Node processes.

/// The fields of `GET /metrics` that the tests use.
#[derive(Clone, Debug)]
struct Metrics {
    id: u64,
    state: String,
    term: u64,
    leader: Option<u64>,
    last_log: Option<u64>,
    applied: Option<u64>,
    snapshot: Option<u64>,
    purged: Option<u64>,
    voters: Vec<u64>,
}

/// A log index given either as a number or as a log id object with an `index`.
fn index_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::Object(o) => index_of(o.get("index")),
        _ => None,
    }
}

impl Metrics {
    fn parse(v: &Value) -> Result<Metrics, String> {
        let field = |name: &str| v.get(name).ok_or_else(|| format!("no {name:?} in {v}"));
        Ok(Metrics {
            id: field("id")?
                .as_u64()
                .ok_or_else(|| format!("id not a number in {v}"))?,
            state: field("state")?
                .as_str()
                .ok_or_else(|| format!("state not a string in {v}"))?
                .to_string(),
            term: field("current_term")?
                .as_u64()
                .ok_or_else(|| format!("current_term not a number in {v}"))?,
            leader: field("current_leader")?.as_u64(),
            last_log: index_of(Some(field("last_log_index")?)),
            applied: index_of(Some(field("last_applied")?)),
            snapshot: index_of(Some(field("snapshot")?)),
            purged: index_of(Some(field("purged")?)),
            voters: field("membership")?
                .get("voters")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("no membership.voters array in {v}"))?
                .iter()
                .filter_map(Value::as_u64)
                .collect::<std::collections::BTreeSet<u64>>()
                .into_iter()
                .collect(),
        })
    }
}

fn metrics(addr: SocketAddr) -> Result<Metrics, String> {
    let reply = call_once(addr, "GET", "/metrics", None, QUICK_TIMEOUT)
        .map_err(|e| format!("GET /metrics on {addr}: {e}"))?;
    if reply.status != 200 {
        return Err(format!(
            "GET /metrics on {addr}: status {} {}",
            reply.status,
            reply.text()
        ));
    }
    let v = reply
        .json()
        .ok_or_else(|| format!("GET /metrics on {addr}: not JSON: {}", reply.text()))?;
    Metrics::parse(&v).map_err(|e| format!("GET /metrics on {addr}: {e}"))
}

/// A journal: (index, data) of every applied append, in index order.
type Journal = Vec<(u64, Vec<u8>)>;

/// A node's journal: every (index, data) of its applied state, read with `local=true` page by
/// page.
fn journal(addr: SocketAddr) -> Result<Journal, String> {
    let mut entries = Vec::new();
    let mut from = 0u64;
    loop {
        let path = format!("/read?from={from}&max=500&local=true");
        let reply = call_once(addr, "GET", &path, None, QUICK_TIMEOUT)
            .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
        let v = match (reply.status, reply.json()) {
            (200, Some(v)) => v,
            _ => {
                return Err(format!(
                    "GET {path} on {addr}: expected 200 with JSON, got {} {}",
                    reply.status,
                    reply.text()
                ))
            }
        };
        let page = v
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("GET {path} on {addr}: no entries array in {v}"))?;
        if page.is_empty() {
            return Ok(entries);
        }
        if page.len() > 500 {
            return Err(format!(
                "GET {path} on {addr}: {} entries, more than max=500",
                page.len()
            ));
        }
        for e in page {
            let index = e
                .get("index")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("GET {path} on {addr}: entry without index: {e}"))?;
            let data = e
                .get("data_hex")
                .and_then(Value::as_str)
                .and_then(|s| hex::decode(s).ok())
                .ok_or_else(|| format!("GET {path} on {addr}: entry without data_hex: {e}"))?;
            if index < from {
                return Err(format!(
                    "GET {path} on {addr}: entry at index {index}, below from={from}"
                ));
            }
            from = index + 1;
            entries.push((index, data));
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Node {
    id: u64,
    addr: SocketAddr,
    args: Vec<String>,
    /// The node's stderr, across its restarts.
    log: PathBuf,
    child: Option<Child>,
}

/// The node processes of one test, in one temporary directory. Dropping it kills every node
/// still running (and prints the tail of each node's stderr if the test is failing).
struct Procs {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Procs {
    /// `n` nodes with ids 1..=n on free loopback ports (node 1 with `--init`), not started.
    fn new(n: usize, flags: &[&str]) -> Procs {
        let dir = tempfile::tempdir().unwrap();
        // Hold all the ports at once so that they differ, then let them go for the nodes.
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let nodes = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let id = i as u64 + 1;
                let addr = l.local_addr().unwrap();
                let data = dir.path().join(format!("node{id}"));
                let mut args = vec![
                    "--id".to_string(),
                    id.to_string(),
                    "--listen".to_string(),
                    addr.to_string(),
                    "--data-dir".to_string(),
                    data.display().to_string(),
                ];
                if id == 1 {
                    args.push("--init".to_string());
                }
                args.extend(flags.iter().map(|f| f.to_string()));
                Node {
                    id,
                    addr,
                    args,
                    log: dir.path().join(format!("node{id}.stderr")),
                    child: None,
                }
            })
            .collect();
        drop(listeners);
        Procs { nodes, dir }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// Starts node `i` (same command line every time) and waits for its readiness line.
    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} is already running", node.id);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        writeln!(log, "---- test: starting {NODE} {}", node.args.join(" ")).unwrap();
        let mut child = Command::new(NODE)
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {NODE}: {e}"));
        let stdout = child.stdout.take().unwrap();
        node.child = Some(child);
        // The reader keeps draining stdout after the readiness line, so that the node never
        // blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let expected = format!("daxlog-raft-node {} listening on {}", node.id, node.addr);
        let started = Instant::now();
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line == expected => {}
            Ok(line) => panic!(
                "node {}: expected the first stdout line {expected:?}, got {line:?}",
                node.id
            ),
            Err(e) => {
                let status = node.child.as_mut().unwrap().try_wait();
                panic!(
                    "node {}: no readiness line {expected:?} within {:?} ({e}); process status: \
                     {status:?}",
                    node.id,
                    started.elapsed()
                )
            }
        }
    }

    /// Waits until node `i` exits by itself (its exit status), or until `deadline` (`None`).
    fn wait_exit(&mut self, i: usize, deadline: Instant) -> Option<std::process::ExitStatus> {
        let child = self.nodes[i].child.as_mut().expect("node not running");
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.nodes[i].child = None;
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL.
    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut child = node
            .child
            .take()
            .expect("killing a node that is not running");
        child.kill().unwrap();
        child.wait().unwrap();
        let mut log = OpenOptions::new().append(true).open(&node.log).unwrap();
        writeln!(log, "---- test: node {} killed (SIGKILL)", node.id).unwrap();
    }

    fn metrics(&self, i: usize) -> Result<Metrics, String> {
        let m = metrics(self.nodes[i].addr)?;
        if m.id != self.nodes[i].id {
            return Err(format!(
                "GET /metrics on {}: expected id {}, got {m:?}",
                self.nodes[i].addr, self.nodes[i].id
            ));
        }
        Ok(m)
    }

    /// Waits for a leader among `among` (running nodes) whose term is the highest term any of
    /// them reports: a leader cut off from the others, still in an older term, does not count.
    fn wait_leader(&self, among: &[usize], deadline: Instant, what: &str) -> (usize, Metrics) {
        loop {
            let all: Vec<(usize, Result<Metrics, String>)> =
                among.iter().map(|&i| (i, self.metrics(i))).collect();
            let max_term = all
                .iter()
                .filter_map(|(_, m)| m.as_ref().ok().map(|m| m.term))
                .max();
            let leader = all.iter().find_map(|(i, m)| match m {
                Ok(m) if m.state == "Leader" && Some(m.term) == max_term => Some((*i, m.clone())),
                _ => None,
            });
            if let Some(found) = leader {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: expected a leader among nodes {among:?} in time; last metrics: {all:?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node `i` has applied up to `index`.
    fn wait_applied(&self, i: usize, index: u64, deadline: Instant, what: &str) -> Metrics {
        loop {
            let m = self.metrics(i);
            if let Ok(m) = &m {
                if m.applied >= Some(index) {
                    return m.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: expected node {} to apply up to index {index} in time; its last \
                     metrics: {m:?}",
                    self.nodes[i].id
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running node has applied everything the leader has in its log, and
    /// returns the leader and its last log index.
    fn wait_converged(&self, deadline: Instant, what: &str) -> (usize, u64) {
        loop {
            let (leader, lm) = self.wait_leader(&self.running(), deadline, what);
            let last = lm.last_log.unwrap_or(0);
            let all: Vec<Result<Metrics, String>> =
                self.running().iter().map(|&i| self.metrics(i)).collect();
            if all
                .iter()
                .all(|m| matches!(m, Ok(m) if m.applied == Some(last)))
            {
                return (leader, last);
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: expected every node to apply up to the leader's (node {}) last log \
                     index {last}; metrics: {all:?}",
                    self.nodes[leader].id
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts every node, waits for node 1 to lead, adds the others as learners, then makes
    /// them all voters.
    fn form_cluster(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let (leader, _) = self.wait_leader(&[0], deadline, "node 1 after --init");
        let leader_addr = self.nodes[leader].addr;
        for node in &self.nodes[1..] {
            let body = json!({"id": node.id, "addr": node.addr.to_string()});
            let reply = post_json(leader_addr, "/admin/add-learner", &body, ADMIN_TIMEOUT)
                .unwrap_or_else(|e| panic!("POST /admin/add-learner {body}: {e}"));
            assert_eq!(
                reply.status,
                200,
                "POST /admin/add-learner {body}: expected 200, got {}",
                reply.text()
            );
        }
        let voters: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        let body = json!({ "voters": voters });
        let reply = post_json(
            leader_addr,
            "/admin/change-membership",
            &body,
            ADMIN_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("POST /admin/change-membership {body}: {e}"));
        assert_eq!(
            reply.status,
            200,
            "POST /admin/change-membership {body}: expected 200, got {}",
            reply.text()
        );
        for i in 0..self.nodes.len() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let m = self.metrics(i);
                if matches!(&m, Ok(m) if m.voters == voters) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "expected node {} to see voters {voters:?}; its metrics: {m:?}",
                    self.nodes[i].id
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn partition(&self, i: usize, blocked: &[u64]) {
        let body = json!({ "blocked": blocked });
        let reply = post_json(self.nodes[i].addr, "/test/partition", &body, QUICK_TIMEOUT)
            .unwrap_or_else(|e| panic!("POST /test/partition {body} on node {}: {e}", i + 1));
        assert_eq!(
            reply.status,
            200,
            "POST /test/partition {body} on node {}: expected 200, got {}",
            i + 1,
            reply.text()
        );
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "==== node {} ({}) stderr, last 40 lines ({}):\n{}",
                    node.id,
                    node.addr,
                    self.dir.path().display(),
                    tail(&node.log, 40)
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Clients and the history check.

#[derive(Clone, Debug)]
enum Outcome {
    /// 200 `{"index": N}`.
    Acked { index: u64, at: Instant },
    /// A refusal (421, 503), a timeout or a connection error: the entry may or may not have
    /// been committed.
    Failed(String),
    /// A response the API does not allow here (e.g. 400, 404, 413, 500, a 200 without an
    /// index).
    Unexpected(String),
}

/// One append request: every attempt carries a payload of its own, so that an attempt whose
/// fate is unknown (a timeout) cannot be mistaken for another one.
#[derive(Clone, Debug)]
struct Attempt {
    payload: Vec<u8>,
    node: u64,
    sent: Instant,
    outcome: Outcome,
}

/// What client threads share: the node addresses, a stop flag and a count of acknowledgments.
struct Load {
    addrs: Vec<SocketAddr>,
    stop: AtomicBool,
    acks: AtomicUsize,
}

impl Load {
    fn acks(&self) -> usize {
        self.acks.load(Ordering::SeqCst)
    }

    /// Waits until `n` appends in all have been acknowledged.
    fn wait_acks(&self, n: usize, deadline: Instant, what: &str) {
        while self.acks() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: expected {n} acknowledged appends in time, got {}",
                self.acks()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `POST /append` to node `target` once, with payload `payload`.
fn append_once(
    http: &mut Http,
    addrs: &[SocketAddr],
    target: usize,
    payload: Vec<u8>,
    timeout: Duration,
) -> (Attempt, Option<usize>) {
    let sent = Instant::now();
    let result = http.call(
        addrs[target],
        "POST",
        "/append",
        Some(("application/octet-stream", &payload)),
        timeout,
    );
    let mut redirect = None;
    let outcome = match result {
        Ok(r) if r.status == 200 => match r.json().and_then(|v| v.get("index")?.as_u64()) {
            Some(index) => Outcome::Acked {
                index,
                at: Instant::now(),
            },
            None => Outcome::Unexpected(format!("200 without an index: {}", r.text())),
        },
        Ok(r) if r.status == 421 => {
            let v = r.json();
            let error = v.as_ref().and_then(|v| v.get("error")?.as_str());
            let leader_addr = v.as_ref().and_then(|v| v.get("leader_addr")?.as_str());
            redirect = leader_addr
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .and_then(|a| addrs.iter().position(|&x| x == a));
            if error == Some("not_leader") {
                Outcome::Failed(format!("421 {}", r.text()))
            } else {
                Outcome::Unexpected(format!("421 without not_leader: {}", r.text()))
            }
        }
        Ok(r) if r.status == 503 => Outcome::Failed(format!("503 {}", r.text())),
        Ok(r) => Outcome::Unexpected(format!("{} {}", r.status, r.text())),
        Err(e) => Outcome::Failed(match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_string(),
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => format!("{e}"),
        }),
    };
    let attempt = Attempt {
        payload,
        node: target as u64 + 1,
        sent,
        outcome,
    };
    (attempt, redirect)
}

/// A client thread: appends `c<client>-<seq>-a<attempt>` until told to stop, to whichever
/// node it believes leads (following 421's `leader_addr`, else trying the next node).
fn client(id: usize, load: Arc<Load>, timeout: Duration) -> Vec<Attempt> {
    let mut http = Http::default();
    let mut attempts = Vec::new();
    let mut target = id % load.addrs.len();
    let (mut seq, mut attempt) = (0u64, 0u64);
    while !load.stop.load(Ordering::SeqCst) {
        let payload = format!("c{id}-{seq}-a{attempt}").into_bytes();
        let (a, redirect) = append_once(&mut http, &load.addrs, target, payload, timeout);
        let acked = matches!(a.outcome, Outcome::Acked { .. });
        attempts.push(a);
        if acked {
            load.acks.fetch_add(1, Ordering::SeqCst);
            seq += 1;
            attempt = 0;
            continue;
        }
        attempt += 1;
        match redirect {
            Some(next) if next != target => target = next,
            _ => {
                target = (target + 1) % load.addrs.len();
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    attempts
}

fn show(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The history check, over the journals of all nodes (each read in full with
/// `GET /read?local=true` once every node has applied the leader's whole log) and every append
/// attempt the clients made:
///
/// * (a) the journals are identical: the same (index, data) sequence on every node;
/// * (b) every acknowledged payload is in it exactly once, at the index its acknowledgment
///   returned;
/// * (c) no payload is in it twice, and every entry is a payload that some client attempted
///   (an attempt that was not acknowledged may be there once, or not at all);
/// * (d) real-time order: if append A was acknowledged before append B was sent, then
///   index(A) < index(B).
///
/// Returns the number of entries, or every violation found (at most 10 of each kind shown).
fn check_history(journals: &[(u64, Journal)], attempts: &[Attempt]) -> Result<usize, String> {
    let mut problems: Vec<String> = Vec::new();
    let (first_id, first) = &journals[0];
    // (a)
    for (id, other) in &journals[1..] {
        if other != first {
            let at = first
                .iter()
                .zip(other)
                .position(|(a, b)| a != b)
                .unwrap_or(first.len().min(other.len()));
            problems.push(format!(
                "(a) the journals of node {first_id} ({} entries) and node {id} ({} entries) \
                 differ first at position {at}: {:?} vs {:?}",
                first.len(),
                other.len(),
                first.get(at).map(|(i, d)| (i, show(d))),
                other.get(at).map(|(i, d)| (i, show(d))),
            ));
        }
    }
    let mut at: HashMap<&[u8], Vec<u64>> = HashMap::new();
    for (index, data) in first {
        at.entry(data.as_slice()).or_default().push(*index);
    }
    // (b)
    let acked: Vec<(&Attempt, u64, Instant)> = attempts
        .iter()
        .filter_map(|a| match a.outcome {
            Outcome::Acked { index, at } => Some((a, index, at)),
            _ => None,
        })
        .collect();
    let mut wrong = Vec::new();
    for (a, index, _) in &acked {
        let found = at.get(a.payload.as_slice()).cloned().unwrap_or_default();
        if found != [*index] {
            wrong.push(format!(
                "{} acknowledged at index {index} by node {}, found at {found:?}",
                show(&a.payload),
                a.node
            ));
        }
    }
    report(&mut problems, &wrong, |n| {
        format!(
            "(b) {n} of {} acknowledged payloads not exactly once at their index",
            acked.len()
        )
    });
    // (c)
    let twice: Vec<String> = at
        .iter()
        .filter(|(_, indexes)| indexes.len() > 1)
        .map(|(data, indexes)| format!("{} at {indexes:?}", show(data)))
        .collect();
    report(&mut problems, &twice, |n| {
        format!("(c) {n} payloads more than once")
    });
    let attempted: HashSet<&[u8]> = attempts.iter().map(|a| a.payload.as_slice()).collect();
    let foreign: Vec<String> = first
        .iter()
        .filter(|(_, data)| !attempted.contains(data.as_slice()))
        .map(|(index, data)| format!("{} at {index}", show(data)))
        .collect();
    report(&mut problems, &foreign, |n| {
        format!("(c) {n} entries that no client attempted")
    });
    // (d): sweep the attempts by send time, keeping the highest index among those acknowledged
    // before it.
    let mut by_ack: Vec<&(&Attempt, u64, Instant)> = acked.iter().collect();
    by_ack.sort_by_key(|(_, _, at)| *at);
    let mut by_sent: Vec<&(&Attempt, u64, Instant)> = acked.iter().collect();
    by_sent.sort_by_key(|(a, _, _)| a.sent);
    let mut before: Option<(u64, &[u8])> = None;
    let mut next = 0;
    let mut reordered = Vec::new();
    for (b, index_b, _) in by_sent {
        while next < by_ack.len() && by_ack[next].2 < b.sent {
            let (a, index_a, _) = by_ack[next];
            if before.is_none_or(|(max, _)| *index_a > max) {
                before = Some((*index_a, &a.payload));
            }
            next += 1;
        }
        if let Some((index_a, payload_a)) = before {
            if index_a >= *index_b {
                reordered.push(format!(
                    "{} (index {index_a}) was acknowledged before {} was sent, which got index \
                     {index_b}",
                    show(payload_a),
                    show(&b.payload)
                ));
            }
        }
    }
    report(&mut problems, &reordered, |n| {
        format!("(d) {n} appends ordered against real time")
    });
    if problems.is_empty() {
        Ok(first.len())
    } else {
        Err(problems.join("\n"))
    }
}

/// Adds a problem for the violations in `found`, if any: `what` says how many, then the first
/// ten follow.
fn report(problems: &mut Vec<String>, found: &[String], what: impl FnOnce(usize) -> String) {
    if !found.is_empty() {
        problems.push(format!(
            "{}: {:?}",
            what(found.len()),
            &found[..found.len().min(10)]
        ));
    }
}

fn read_journals(procs: &Procs) -> Vec<(u64, Journal)> {
    procs
        .nodes
        .iter()
        .map(|n| {
            let j = journal(n.addr).unwrap_or_else(|e| panic!("reading node {}: {e}", n.id));
            (n.id, j)
        })
        .collect()
}

fn no_unexpected(attempts: &[Attempt]) {
    let unexpected: Vec<String> = attempts
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Unexpected(what) => {
                Some(format!("{} to node {}: {what}", show(&a.payload), a.node))
            }
            _ => None,
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "expected only 200, 421 and 503 answers to appends, got {} others: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(10)]
    );
}

// ------------------------------------------------------------------------------------------
// The tests.

/// Heartbeats and elections short enough for a test, long enough for a busy 2-CPU machine.
const TIMING: [&str; 6] = [
    "--heartbeat-ms",
    "50",
    "--election-min-ms",
    "300",
    "--election-max-ms",
    "600",
];

/// Kills the leader while the clients append, keeps it down until the new leader has purged
/// past everything it may have (so that it can only catch up from a snapshot), restarts it
/// with the same command line and waits until it has applied the leader's log. Returns a
/// summary and the index of the node it killed.
fn kill_leader_round(procs: &mut Procs, load: &Load, round: usize) -> (String, usize) {
    let phase = |secs| Instant::now() + Duration::from_secs(secs);
    let what = |s: &str| format!("round {round}: {s}");
    let (old, _) = procs.wait_leader(&procs.running(), phase(30), &what("before the kill"));
    procs.kill(old);
    let acks_at_kill = load.acks();
    let killed_at = Instant::now();
    let (new, nm) = procs.wait_leader(&procs.running(), phase(30), &what("after the kill"));
    let elected_in = killed_at.elapsed();
    assert_ne!(
        new, old,
        "round {round}: the killed node is still the leader"
    );
    // Every entry the killed node shares with the committed log is at or below the new
    // leader's last log index when it takes over.
    let bound = nm.last_log.unwrap_or(0);
    load.wait_acks(acks_at_kill + 100, phase(30), &what("after the kill"));

    let deadline = phase(60);
    let purged = loop {
        let m = procs.metrics(new);
        if let Ok(m) = &m {
            if m.purged > Some(bound) {
                break m.purged.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: expected node {} (leader) to purge past index {bound} while node {} \
             is down; its metrics: {m:?}",
            new + 1,
            old + 1
        );
        thread::sleep(Duration::from_millis(50));
    };
    let acked_while_down = load.acks() - acks_at_kill;
    procs.start(old);
    let target = procs
        .metrics(new)
        .ok()
        .and_then(|m| m.last_log)
        .unwrap_or(bound);
    let restarted_at = Instant::now();
    let caught = procs.wait_applied(
        old,
        target,
        phase(60),
        &what("the killed leader catching up"),
    );
    let catch_up = restarted_at.elapsed();
    assert!(
        caught.snapshot >= Some(purged),
        "round {round}: expected the restarted node {} to hold a snapshot up to at least \
         {purged} (the leader had purged up to there); its metrics: {caught:?}",
        old + 1
    );
    let summary = format!(
        "round {round}: killed leader node {}, node {} elected in {elected_in:?}, \
         {acked_while_down} acks while down, leader purged to {purged} (past {bound}), \
         caught up to {target} in {catch_up:?}",
        old + 1,
        new + 1
    );
    (summary, old)
}

/// Counts the failed attempts by kind (status and error, or the I/O error's kind).
fn failure_kinds(attempts: &[Attempt]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for a in attempts {
        if let Outcome::Failed(what) | Outcome::Unexpected(what) = &a.outcome {
            let kind = match what.find('{') {
                Some(at) => what[..at].trim().to_string() + " " + json_error(&what[at..]),
                None => what.clone(),
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    kinds
}

fn json_error(body: &str) -> &str {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match v.get("error").and_then(Value::as_str) {
            Some("not_leader") => "not_leader",
            Some("unavailable") => "unavailable",
            Some("log_full") => "log_full",
            Some("too_large") => "too_large",
            _ => "other",
        },
        Err(_) => "other",
    }
}

#[test]
fn leader_killed_mid_stream() {
    let started = Instant::now();
    let mut flags = TIMING.to_vec();
    flags.extend(["--snapshot-every", "200"]);
    let mut procs = Procs::new(3, &flags);
    procs.form_cluster();

    let load = Arc::new(Load {
        addrs: procs.addrs(),
        stop: AtomicBool::new(false),
        acks: AtomicUsize::new(0),
    });
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let load = load.clone();
            thread::spawn(move || client(id, load, Duration::from_secs(2)))
        })
        .collect();
    // Also stops the clients if an assertion below fails.
    struct StopOnDrop(Arc<Load>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop.store(true, Ordering::SeqCst);
        }
    }
    let _stop = StopOnDrop(load.clone());
    let phase = |secs| Instant::now() + Duration::from_secs(secs);

    load.wait_acks(500, phase(30), "before the first kill");
    let killed_at = Instant::now();
    let mut summaries = Vec::new();
    let mut killed = Vec::new();
    for round in 1..=2 {
        let (summary, old) = kill_leader_round(&mut procs, &load, round);
        summaries.push(summary);
        killed.push(old);
        let acks = load.acks();
        load.wait_acks(acks + 100, phase(30), "after a restart");
    }

    // Kill a follower (one that was not killed before, if there is one) for a few appends
    // only: the leader still has the entries it misses.
    let (leader, lm) = procs.wait_leader(&procs.running(), phase(30), "before a follower kill");
    let follower = (0..3)
        .filter(|&i| i != leader)
        .min_by_key(|i| killed.contains(i))
        .unwrap();
    procs.kill(follower);
    let follower_bound = lm.last_log.unwrap_or(0);
    let acks = load.acks();
    load.wait_acks(acks + 20, phase(30), "while a follower is down");
    let leader_purged = procs.metrics(leader).ok().and_then(|m| m.purged);
    procs.start(follower);
    let target = procs
        .metrics(leader)
        .ok()
        .and_then(|m| m.last_log)
        .unwrap_or(0);
    let restarted_at = Instant::now();
    procs.wait_applied(
        follower,
        target,
        phase(60),
        "the restarted follower catching up",
    );
    summaries.push(format!(
        "killed follower node {}, which had up to about {follower_bound}; leader purged to \
         {leader_purged:?}; caught up to {target} in {:?}",
        follower + 1,
        restarted_at.elapsed()
    ));
    let acks = load.acks();
    load.wait_acks(acks + 50, phase(30), "after the follower restart");

    load.stop.store(true, Ordering::SeqCst);
    let attempts: Vec<Attempt> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client thread panicked"))
        .collect();
    no_unexpected(&attempts);
    let acked_after_kill = attempts
        .iter()
        .filter(|a| a.sent > killed_at && matches!(a.outcome, Outcome::Acked { .. }))
        .count();
    assert!(
        acked_after_kill >= 300,
        "expected at least 300 appends acknowledged after the first kill, got {acked_after_kill}"
    );

    let (_, last) = procs.wait_converged(phase(30), "at the end");
    let journals = read_journals(&procs);
    let entries = check_history(&journals, &attempts).unwrap_or_else(|e| {
        panic!(
            "history check failed over {} attempts:\n{e}",
            attempts.len()
        )
    });
    let acked = attempts
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Acked { .. }))
        .count();
    println!(
        "{}; {} attempts, {acked} acknowledged, failures {:?}; {entries} journal entries \
         ({} from unacknowledged attempts), last log index {last}; {:?} in all",
        summaries.join("; "),
        attempts.len(),
        failure_kinds(&attempts),
        entries - acked,
        started.elapsed()
    );
}

/// The history check finds each kind of violation it looks for.
#[test]
fn history_check_finds_violations() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let acked = |payload: &str, index, sent, ack| Attempt {
        payload: payload.as_bytes().to_vec(),
        node: 1,
        sent: at(sent),
        outcome: Outcome::Acked { index, at: at(ack) },
    };
    let failed = |payload: &str, sent| Attempt {
        payload: payload.as_bytes().to_vec(),
        node: 1,
        sent: at(sent),
        outcome: Outcome::Failed("timed out".into()),
    };
    let journal = |entries: &[(u64, &str)]| -> Journal {
        entries
            .iter()
            .map(|(i, d)| (*i, d.as_bytes().to_vec()))
            .collect()
    };
    let attempts = vec![
        acked("a", 3, 0, 10),
        failed("b", 5),
        acked("c", 5, 20, 30),
        failed("d", 40),
    ];
    let good = journal(&[(3, "a"), (4, "b"), (5, "c")]);
    let three = |j: &Journal| vec![(1, j.clone()), (2, j.clone()), (3, j.clone())];
    assert_eq!(check_history(&three(&good), &attempts), Ok(3));

    let expect = |journals: Vec<(u64, Journal)>, attempts: &[Attempt], kind: &str| {
        let e = check_history(&journals, attempts).expect_err(kind);
        assert!(e.starts_with(kind), "expected a {kind} violation, got {e}");
    };
    // (a) a node that differs.
    let mut journals = three(&good);
    journals[2].1.pop();
    expect(journals, &attempts, "(a)");
    // (b) an acknowledged payload missing, or at another index.
    expect(three(&journal(&[(3, "a"), (4, "b")])), &attempts, "(b)");
    expect(three(&journal(&[(3, "a"), (6, "c")])), &attempts, "(b)");
    // (c) an unacknowledged payload twice; a payload nobody sent.
    let twice = journal(&[(3, "a"), (4, "b"), (5, "c"), (6, "b")]);
    expect(three(&twice), &attempts, "(c)");
    let foreign = journal(&[(3, "a"), (4, "x"), (5, "c")]);
    expect(three(&foreign), &attempts, "(c)");
    // (d) c sent after a was acknowledged, but ordered before it.
    let reordered = vec![acked("a", 5, 0, 10), acked("c", 3, 20, 30)];
    expect(three(&journal(&[(3, "c"), (5, "a")])), &reordered, "(d)");
    // Concurrent appends may be ordered either way.
    let concurrent = vec![acked("a", 5, 0, 30), acked("c", 3, 20, 40)];
    let j = journal(&[(3, "c"), (5, "a")]);
    assert_eq!(check_history(&three(&j), &concurrent), Ok(2));
}

#[test]
fn minority_partition_acknowledges_nothing() {
    let started = Instant::now();
    let mut flags = TIMING.to_vec();
    flags.push("--test-hooks");
    let mut procs = Procs::new(3, &flags);
    procs.form_cluster();
    let addrs = procs.addrs();
    let phase = |secs| Instant::now() + Duration::from_secs(secs);
    let mut attempts = Vec::new();

    // Some appends before the partition.
    let (old, om) = procs.wait_leader(&[0, 1, 2], phase(30), "before the partition");
    let mut http = Http::default();
    for k in 0..20 {
        let payload = format!("before-{k}").into_bytes();
        let (a, _) = append_once(&mut http, &addrs, old, payload, Duration::from_secs(5));
        assert!(
            matches!(a.outcome, Outcome::Acked { .. }),
            "expected the leader (node {}) to acknowledge {}: {:?}",
            old + 1,
            show(&a.payload),
            a.outcome
        );
        attempts.push(a);
    }

    // Cut the leader off from both followers, in both directions.
    let old_id = old as u64 + 1;
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let other_ids: Vec<u64> = others.iter().map(|&i| i as u64 + 1).collect();
    procs.partition(old, &other_ids);
    for &i in &others {
        procs.partition(i, &[old_id]);
    }
    let partitioned_at = Instant::now();

    // Appends and a linearizable read sent to the cut-off leader, concurrently with the
    // majority's progress.
    let isolated: Vec<_> = (0..3)
        .map(|t| {
            let addrs = addrs.clone();
            thread::spawn(move || {
                let mut http = Http::default();
                (0..2)
                    .map(|k| {
                        let payload = format!("isolated-{t}-{k}").into_bytes();
                        append_once(&mut http, &addrs, old, payload, Duration::from_secs(3)).0
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let read_addr = addrs[old];
    let isolated_read = thread::spawn(move || {
        call_once(
            read_addr,
            "GET",
            "/read?from=0&max=10",
            None,
            Duration::from_secs(3),
        )
    });

    // The majority elects a leader of a later term and acknowledges appends.
    let (new, nm) = procs.wait_leader(&others, phase(30), "on the majority side");
    assert!(
        nm.term > om.term,
        "expected the majority's leader (node {}) in a term after {}, got {nm:?}",
        new + 1,
        om.term
    );
    let elected_in = partitioned_at.elapsed();
    let mut target = new;
    let mut majority_acks = 0;
    let deadline = phase(30);
    let mut k = 0;
    while majority_acks < 20 {
        assert!(
            Instant::now() < deadline,
            "expected 20 appends acknowledged by the majority in time, got {majority_acks}; \
             last attempt: {:?}",
            attempts.last()
        );
        let payload = format!("majority-{k}").into_bytes();
        k += 1;
        let (a, redirect) = append_once(&mut http, &addrs, target, payload, Duration::from_secs(5));
        if matches!(a.outcome, Outcome::Acked { .. }) {
            majority_acks += 1;
        } else {
            target = match redirect {
                Some(r) if r != old => r,
                _ => others[(others.iter().position(|&i| i == target).unwrap() + 1) % 2],
            };
            thread::sleep(Duration::from_millis(20));
        }
        attempts.push(a);
    }

    let isolated: Vec<Attempt> = isolated
        .into_iter()
        .flat_map(|t| t.join().expect("an isolated client panicked"))
        .collect();
    let acked_by_isolated: Vec<&Attempt> = isolated
        .iter()
        .filter(|a| !matches!(a.outcome, Outcome::Failed(_)))
        .collect();
    assert!(
        acked_by_isolated.is_empty(),
        "expected the cut-off leader to refuse or time out every append (421, 503 or no \
         answer), got {acked_by_isolated:?}"
    );
    let read_outcome = match isolated_read.join().unwrap() {
        Ok(r) if r.status == 200 => panic!(
            "expected the cut-off leader to serve no linearizable read, got 200 {}",
            r.text()
        ),
        Ok(r) => format!("{} {}", r.status, r.text()),
        Err(e) => format!("{e}"),
    };
    let isolated_outcomes = failure_kinds(&isolated);
    attempts.extend(isolated.iter().cloned());
    no_unexpected(&attempts);

    // Heal; the old leader follows the new one and applies its log.
    for i in 0..3 {
        procs.partition(i, &[]);
    }
    let (leader, last) = procs.wait_converged(phase(30), "after healing");
    let m = procs.metrics(old).unwrap();
    assert!(
        m.state != "Leader" && m.leader == Some(leader as u64 + 1),
        "expected the old leader (node {old_id}) to follow node {} after healing, got {m:?}",
        leader + 1
    );

    let journals = read_journals(&procs);
    let entries = check_history(&journals, &attempts).unwrap_or_else(|e| {
        panic!(
            "history check failed over {} attempts:\n{e}",
            attempts.len()
        )
    });
    let kept: Vec<String> = journals[0]
        .1
        .iter()
        .filter(|(_, d)| d.starts_with(b"isolated-"))
        .map(|(i, d)| format!("{} at {i}", show(d)))
        .collect();
    assert!(
        kept.is_empty(),
        "expected none of the appends sent to the cut-off leader in any journal, found {kept:?}"
    );
    assert!(
        entries >= 40,
        "expected at least the 20 appends from before and the 20 from the majority side, got \
         {entries} entries"
    );
    println!(
        "majority leader node {} elected {elected_in:?} after the partition; the cut-off \
         leader answered appends with {isolated_outcomes:?} and a linearizable read with \
         {read_outcome:?}; {entries} entries, last log index {last}; \
         {:?} in all",
        new + 1,
        started.elapsed()
    );
}

/// Every node killed at once (a power cut) right after a burst of acknowledged appends; then
/// the old leader is restarted, then one follower. openraft restores a node whose vote is
/// committed and its own as leader at once, in the same term, without a new blank entry (its
/// log holds entries of that term): its linearizable reads then wait only for the committed
/// log id it read from its store. Every
/// `/read` it answers with 200 must show every acknowledged append. The saved committed log
/// id lags the acknowledgments (it is saved at most every 100 ms): without the node's read
/// fence (`LogStore::read_fence`) the first reads miss most of the burst.
#[test]
fn linearizable_reads_after_a_whole_cluster_crash() {
    let mut procs = Procs::new(3, &TIMING);
    procs.form_cluster();
    let addrs = procs.addrs();
    let phase = |secs| Instant::now() + Duration::from_secs(secs);
    let (leader, _) = procs.wait_leader(&[0, 1, 2], phase(30), "before the burst");
    let mut http = Http::default();
    let mut acked = Vec::new();
    for k in 0..30 {
        let payload = format!("burst-{k}").into_bytes();
        let (a, _) = append_once(&mut http, &addrs, leader, payload, Duration::from_secs(5));
        match a.outcome {
            Outcome::Acked { index, .. } => acked.push((index, a.payload)),
            other => panic!("expected the leader to acknowledge append {k}, got {other:?}"),
        }
    }
    // Idle for a while: the last acknowledgment is long past when the power goes.
    thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        procs.kill(i);
    }
    procs.start(leader);
    let follower = (leader + 1) % 3;
    procs.start(follower);
    let deadline = phase(30);
    let mut answered = 0;
    while answered < 20 {
        assert!(
            Instant::now() < deadline,
            "expected 20 linearizable reads answered in time, got {answered}"
        );
        let reply = call_once(
            addrs[leader],
            "GET",
            "/read?from=0&max=1000",
            None,
            QUICK_TIMEOUT,
        );
        let reply = match reply {
            Ok(r) if r.status == 200 => r,
            _ => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        answered += 1;
        let v = reply.json().expect("a JSON body");
        let seen: HashSet<(u64, Vec<u8>)> = v["entries"]
            .as_array()
            .expect("an entries array")
            .iter()
            .map(|e| {
                let index = e["index"].as_u64().unwrap();
                (index, hex::decode(e["data_hex"].as_str().unwrap()).unwrap())
            })
            .collect();
        let missing: Vec<u64> = acked
            .iter()
            .filter(|a| !seen.contains(a))
            .map(|(i, _)| *i)
            .collect();
        assert!(
            missing.is_empty(),
            "linearizable read {answered} on node {} (applied {}) misses the acknowledged \
             appends at {missing:?}",
            leader + 1,
            v["applied"]
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A node whose Raft stops by itself (here: its state machine cannot write a snapshot, as
/// `sm/snapshot.bin` has become a directory that is not empty) exits with a failure status
/// and the reason on stderr, instead of staying up as a node that answers but takes no part.
#[test]
fn a_node_whose_raft_stops_exits_with_the_reason() {
    let mut procs = Procs::new(1, &["--snapshot-every", "20"]);
    procs.start(0);
    let addrs = procs.addrs();
    let deadline = Instant::now() + Duration::from_secs(30);
    procs.wait_leader(&[0], deadline, "a one-node cluster");
    let blocker = procs
        .dir
        .path()
        .join("node1")
        .join("sm")
        .join("snapshot.bin");
    fs::create_dir_all(&blocker).unwrap();
    fs::write(blocker.join("in-the-way"), b"x").unwrap();
    let mut http = Http::default();
    let mut acked = 0;
    for k in 0..40 {
        let (a, _) = append_once(&mut http, &addrs, 0, vec![k as u8; 100], QUICK_TIMEOUT);
        match a.outcome {
            Outcome::Acked { .. } => acked += 1,
            // (Once Raft stopped: refused, or no answer at all once the process is gone.)
            _ => break,
        }
    }
    assert!(
        acked >= 10,
        "only {acked} appends acknowledged before the snapshot"
    );
    let status = procs
        .wait_exit(0, Instant::now() + Duration::from_secs(20))
        .expect("the node did not exit after its Raft stopped");
    assert_eq!(status.code(), Some(1), "exit status {status}");
    let stderr = tail(&procs.nodes[0].log, 20);
    assert!(
        stderr.contains("daxlog-raft-node: Raft stopped:") && stderr.contains("Snapshot"),
        "stderr: {stderr}"
    );
}
