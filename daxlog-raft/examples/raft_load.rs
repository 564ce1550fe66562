//! A closed-loop write load against a daxlog-raft cluster or an etcd cluster: N clients, each
//! with its own keep-alive connection to the leader and one request in flight at a time, for D
//! seconds after a warm-up. Prints one JSON line: committed writes/s and latency percentiles.
//!
//! ```text
//! cargo run --release -p daxlog-raft --example raft_load -- \
//!     --target daxlog-raft --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
//!     --size 64 --clients 16 --duration 5
//! cargo run --release -p daxlog-raft --example raft_load -- \
//!     --target etcd --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 \
//!     --size 64 --clients 16 --duration 5
//! ```
//!
//! * `daxlog-raft`: `POST /append` with `size` raw bytes to the node whose `GET /metrics` says
//!   `"state":"Leader"` (HTTP/1.1); a write counts once the node answered 200 `{"index":N}`,
//!   i.e. once it is committed and applied on the leader.
//! * `etcd`: gRPC `etcdserverpb.KV/Put` (HTTP/2, one channel per client) to the member that
//!   `Maintenance/Status` names as leader, with a key unique to the write
//!   (`b/<client>/<seq>`, 14 bytes) and a value of `size` bytes; a write counts once etcd
//!   answered, i.e. once it is committed and applied. The messages are declared below with
//!   prost's derive (the fields of etcd 3.4's `rpc.proto` that are used), which keeps protoc
//!   out of the build.
//! * `daxlog-raft-metrics`: `GET /metrics` on the leader, the HTTP round trip of the node's
//!   server alone (no Raft work), to put the append latency in context.
//!
//! Requests that fail are counted in `errors` (the first error is printed in `first_error`)
//! and are left out of the rate and the percentiles. Everything runs on `--threads` runtime
//! threads (default 1), so that the generator takes one CPU at most from the servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    #[value(name = "daxlog-raft")]
    DaxlogRaft,
    Etcd,
    #[value(name = "daxlog-raft-metrics")]
    DaxlogRaftMetrics,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::DaxlogRaft => "daxlog-raft",
            Target::Etcd => "etcd",
            Target::DaxlogRaftMetrics => "daxlog-raft-metrics",
        }
    }
    fn transport(self) -> &'static str {
        match self {
            Target::DaxlogRaft => "HTTP/1.1 POST /append",
            Target::Etcd => "gRPC KV.Put",
            Target::DaxlogRaftMetrics => "HTTP/1.1 GET /metrics",
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "Closed-loop write load against daxlog-raft or etcd; one JSON line out")]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    /// host:port of every member (client port); writes go to the leader among them.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Bytes of data per write (the value, for etcd).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before the measurement starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runtime threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Free text copied into the output line (e.g. the storage location).
    #[arg(long, default_value = "")]
    label: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// etcd 3.4's `etcdserverpb` messages, as far as the generator uses them (prost skips the
/// fields of a response that are not declared).
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
        #[prost(uint64, tag = "4")]
        pub raft_term: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        #[prost(int64, tag = "3")]
        pub lease: i64,
        #[prost(bool, tag = "4")]
        pub prev_kv: bool,
        #[prost(bool, tag = "5")]
        pub ignore_value: bool,
        #[prost(bool, tag = "6")]
        pub ignore_lease: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }
}

/// One client's connection.
enum Conn {
    Http {
        client: reqwest::Client,
        url: String,
    },
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
    },
}

async fn grpc_connect(
    addr: &str,
) -> Result<tonic::client::Grpc<tonic::transport::Channel>, BoxError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(tonic::client::Grpc::new(channel))
}

async fn grpc_unary<Req, Resp>(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    req: Req,
) -> Result<Resp, BoxError>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    let resp = grpc.unary(tonic::Request::new(req), path, codec).await?;
    Ok(resp.into_inner())
}

fn http_client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// The endpoint of the leader, as the members themselves say.
async fn find_leader(target: Target, endpoints: &[String]) -> Result<String, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for ep in endpoints {
            let is_leader = match target {
                Target::Etcd => match grpc_connect(ep).await {
                    Ok(mut grpc) => {
                        match grpc_unary::<_, pb::StatusResponse>(
                            &mut grpc,
                            "/etcdserverpb.Maintenance/Status",
                            pb::StatusRequest {},
                        )
                        .await
                        {
                            Ok(st) => {
                                st.leader != 0 && st.header.map(|h| h.member_id) == Some(st.leader)
                            }
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                },
                Target::DaxlogRaft | Target::DaxlogRaftMetrics => {
                    let client = http_client()?;
                    match client.get(format!("http://{ep}/metrics")).send().await {
                        Ok(r) if r.status().is_success() => {
                            let body = r.bytes().await?;
                            let m: serde_json::Value = serde_json::from_slice(&body)?;
                            m["state"] == "Leader"
                        }
                        _ => false,
                    }
                }
            };
            if is_leader {
                return Ok(ep.clone());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no leader among {endpoints:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Conn {
    async fn open(target: Target, leader: &str) -> Result<Conn, BoxError> {
        Ok(match target {
            Target::Etcd => Conn::Grpc {
                grpc: grpc_connect(leader).await?,
            },
            Target::DaxlogRaft => Conn::Http {
                client: http_client()?,
                url: format!("http://{leader}/append"),
            },
            Target::DaxlogRaftMetrics => Conn::Http {
                client: http_client()?,
                url: format!("http://{leader}/metrics"),
            },
        })
    }

    /// One write (or, for the metrics target, one read of /metrics), until it is answered.
    async fn request(
        &mut self,
        target: Target,
        client_no: usize,
        seq: u64,
        data: &[u8],
    ) -> Result<(), BoxError> {
        match self {
            Conn::Grpc { grpc } => {
                let req = pb::PutRequest {
                    key: format!("b/{client_no:03}/{seq:08}").into_bytes(),
                    value: data.to_vec(),
                    ..Default::default()
                };
                let _: pb::PutResponse = grpc_unary(grpc, "/etcdserverpb.KV/Put", req).await?;
                Ok(())
            }
            Conn::Http { client, url } => {
                let resp = if target == Target::DaxlogRaftMetrics {
                    client.get(url.as_str()).send().await?
                } else {
                    client
                        .post(url.as_str())
                        .header("content-type", "application/octet-stream")
                        .body(data.to_vec())
                        .send()
                        .await?
                };
                let status = resp.status();
                let body = resp.bytes().await?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)).into());
                }
                if target == Target::DaxlogRaft {
                    let v: serde_json::Value = serde_json::from_slice(&body)?;
                    if v["index"].as_u64().is_none() {
                        return Err(
                            format!("no index in {}", String::from_utf8_lossy(&body)).into()
                        );
                    }
                }
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct ClientResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

async fn run_client(
    target: Target,
    leader: Arc<String>,
    client_no: usize,
    size: usize,
    measure_from: Instant,
    measure_to: Instant,
) -> ClientResult {
    let mut out = ClientResult::default();
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(client_no as u8))
        .collect();
    let mut conn = match Conn::open(target, &leader).await {
        Ok(c) => c,
        Err(e) => {
            out.errors += 1;
            out.first_error = Some(format!("connect: {e}"));
            return out;
        }
    };
    let mut seq = 0u64;
    loop {
        let start = Instant::now();
        if start >= measure_to {
            break;
        }
        let res = conn.request(target, client_no, seq, &data).await;
        seq += 1;
        let counted = start >= measure_from;
        match res {
            Ok(()) if counted => out.latencies_ns.push(start.elapsed().as_nanos() as u64),
            Ok(()) => {}
            Err(e) => {
                if counted {
                    out.errors += 1;
                }
                if out.first_error.is_none() {
                    out.first_error = Some(e.to_string());
                }
                // Do not spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn run(args: Args) -> Result<serde_json::Value, BoxError> {
    let leader = Arc::new(find_leader(args.target, &args.endpoints).await?);
    let t0 = Instant::now() + Duration::from_millis(100);
    let measure_from = t0 + Duration::from_secs_f64(args.warmup);
    let measure_to = measure_from + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = (0..args.clients)
        .map(|n| {
            tokio::spawn(run_client(
                args.target,
                leader.clone(),
                n,
                args.size,
                measure_from,
                measure_to,
            ))
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let r = t.await?;
        lat.extend_from_slice(&r.latencies_ns);
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    lat.sort_unstable();
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    Ok(serde_json::json!({
        "target": args.target.name(),
        "transport": args.target.transport(),
        "leader": *leader,
        "label": args.label,
        "size": args.size,
        "clients": args.clients,
        "duration_s": args.duration,
        "writes": lat.len(),
        "writes_per_s": r1(lat.len() as f64 / args.duration),
        "p50_us": r1(percentile(&lat, 50.0)),
        "p99_us": r1(percentile(&lat, 99.0)),
        "max_us": r1(percentile(&lat, 100.0)),
        "errors": errors,
        "first_error": first_error,
    }))
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let line = rt.block_on(run(args))?;
    println!("{line}");
    Ok(())
}
