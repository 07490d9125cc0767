//! A CRI client, the kubelet's side of `runtime.v1.RuntimeService`: just the calls a pod
//! sandbox's life needs (Version, Status, RunPodSandbox, PodSandboxStatus, StopPodSandbox,
//! RemovePodSandbox), over the runtime's unix socket.
//!
//! The messages are hand-written `prost` structs carrying only the fields used here, with the
//! field numbers of `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto` (protobuf ignores fields it
//! does not know, in both directions), so no `protoc` and no build script. gRPC is a POST over
//! HTTP/2 (`content-type: application/grpc`, each message framed as a compressed flag and a
//! 4-byte length) with the outcome in the `grpc-status` trailer; `hyper`'s HTTP/2 client does
//! the transport. Blocking API: each call runs on the client's own current-thread runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;

/// What a CRI call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("starting the client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("connecting to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{method}: HTTP/2: {message}")]
    Http { method: String, message: String },
    #[error("{method}: gRPC status {code}: {message}")]
    Status {
        method: String,
        code: u32,
        message: String,
    },
    #[error("{method}: malformed response: {why}")]
    Decode { method: String, why: String },
    #[error("{method}: no answer within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
}

/// `PodSandboxMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// `LinuxPodSandboxConfig` (only the cgroup parent).
#[derive(Clone, PartialEq, Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
}

/// `PodSandboxConfig`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    runtime_handler: String,
}

#[derive(Clone, PartialEq, Message)]
struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

/// The request of StopPodSandbox and RemovePodSandbox.
#[derive(Clone, PartialEq, Message)]
struct SandboxId {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, Message)]
struct Empty {}

#[derive(Clone, PartialEq, Message)]
struct PodSandboxStatusRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

/// `PodIP`.
#[derive(Clone, PartialEq, Message)]
pub struct PodIp {
    #[prost(string, tag = "1")]
    pub ip: String,
}

/// `PodSandboxNetworkStatus`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxNetworkStatus {
    #[prost(string, tag = "1")]
    pub ip: String,
    #[prost(message, repeated, tag = "2")]
    pub additional_ips: Vec<PodIp>,
}

/// `PodSandboxStatus`: state 0 is `SANDBOX_READY`, 1 `SANDBOX_NOTREADY`.
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(message, optional, tag = "5")]
    pub network: Option<PodSandboxNetworkStatus>,
}

/// `PodSandboxStatusResponse`: the status and, when verbose, the runtime's `info` (containerd
/// puts a JSON document under `info`, with the OCI spec and its netns path).
#[derive(Clone, PartialEq, Message)]
pub struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<PodSandboxStatus>,
    #[prost(map = "string, string", tag = "2")]
    pub info: HashMap<String, String>,
}

#[derive(Clone, PartialEq, Message)]
struct ListPodSandboxRequest {}

/// `PodSandbox` (only its id).
#[derive(Clone, PartialEq, Message)]
struct PodSandboxItem {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, Message)]
struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    items: Vec<PodSandboxItem>,
}

#[derive(Clone, PartialEq, Message)]
struct VersionRequest {
    #[prost(string, tag = "1")]
    version: String,
}

/// `VersionResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

#[derive(Clone, PartialEq, Message)]
struct StatusRequest {
    #[prost(bool, tag = "1")]
    verbose: bool,
}

/// `RuntimeCondition` (`RuntimeReady`, `NetworkReady`).
#[derive(Clone, PartialEq, Message)]
pub struct RuntimeCondition {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(bool, tag = "2")]
    pub status: bool,
    #[prost(string, tag = "3")]
    pub reason: String,
    #[prost(string, tag = "4")]
    pub message: String,
}

#[derive(Clone, PartialEq, Message)]
struct RuntimeStatus {
    #[prost(message, repeated, tag = "1")]
    conditions: Vec<RuntimeCondition>,
}

#[derive(Clone, PartialEq, Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<RuntimeStatus>,
}

const SERVICE: &str = "runtime.v1.RuntimeService";

/// A client of one runtime socket.
pub struct CriClient {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
}

/// A message in gRPC's length-prefixed framing (uncompressed).
fn frame(msg: &impl Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + msg.encoded_len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(msg.encoded_len()).unwrap_or(u32::MAX));
    msg.encode(&mut buf).expect("BytesMut grows");
    buf.freeze()
}

/// The one message of a unary response body.
fn unframe(mut body: Bytes) -> Result<Bytes, String> {
    if body.len() < 5 {
        return Err(format!(
            "{} bytes, less than a gRPC frame header",
            body.len()
        ));
    }
    if body.get_u8() != 0 {
        return Err("compressed message (no compression was offered)".into());
    }
    let len = body.get_u32() as usize;
    if body.len() < len {
        return Err(format!("frame of {len} bytes, {} received", body.len()));
    }
    Ok(body.split_to(len))
}

/// `grpc-status` and `grpc-message` of a header or trailer map (`None` when absent).
fn status_of(map: &hyper::HeaderMap) -> Option<(u32, String)> {
    let code = map.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = map
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

impl CriClient {
    pub fn new(socket: &Path) -> Result<Self, CriError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CriError::Runtime)?;
        Ok(Self {
            socket: socket.to_owned(),
            rt,
            timeout: Duration::from_mins(1),
        })
    }

    fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, CriError> {
        let full = format!("{SERVICE}/{method}");
        let timeout = self.timeout;
        self.rt.block_on(async {
            tokio::time::timeout(timeout, self.call_async(&full, frame(req)))
                .await
                .map_err(|_| CriError::Timeout {
                    method: full.clone(),
                    timeout,
                })?
                .and_then(|body| {
                    Resp::decode(body).map_err(|e| CriError::Decode {
                        method: full.clone(),
                        why: e.to_string(),
                    })
                })
        })
    }

    async fn call_async(&self, method: &str, body: Bytes) -> Result<Bytes, CriError> {
        let http = |e: &dyn std::fmt::Display| CriError::Http {
            method: method.to_owned(),
            message: e.to_string(),
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| CriError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| http(&e))?;
        tokio::spawn(conn);
        let req = Request::post(format!("http://localhost/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body))
            .map_err(|e| http(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(|e| http(&e))?;
        let trailers = collected.trailers().cloned();
        let status = trailers
            .as_ref()
            .and_then(status_of)
            .or_else(|| status_of(&parts.headers));
        match status {
            Some((0, _)) => {}
            Some((code, message)) => {
                return Err(CriError::Status {
                    method: method.to_owned(),
                    code,
                    message,
                });
            }
            None => {
                return Err(CriError::Decode {
                    method: method.to_owned(),
                    why: format!("no grpc-status (HTTP {})", parts.status),
                });
            }
        }
        unframe(collected.to_bytes()).map_err(|why| CriError::Decode {
            method: method.to_owned(),
            why,
        })
    }

    pub fn version(&self) -> Result<VersionResponse, CriError> {
        self.call(
            "Version",
            &VersionRequest {
                version: "v1".into(),
            },
        )
    }

    /// The runtime's conditions (`RuntimeReady`, `NetworkReady`: a CNI config is loaded).
    pub fn conditions(&self) -> Result<Vec<RuntimeCondition>, CriError> {
        let r: StatusResponse = self.call("Status", &StatusRequest { verbose: false })?;
        Ok(r.status.map(|s| s.conditions).unwrap_or_default())
    }

    /// RunPodSandbox: the sandbox's id.
    pub fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String, CriError> {
        let r: RunPodSandboxResponse = self.call(
            "RunPodSandbox",
            &RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            },
        )?;
        Ok(r.pod_sandbox_id)
    }

    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatusResponse, CriError> {
        self.call(
            "PodSandboxStatus",
            &PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            },
        )
    }

    /// The ids of every sandbox the runtime has.
    pub fn list_pod_sandboxes(&self) -> Result<Vec<String>, CriError> {
        let r: ListPodSandboxResponse = self.call("ListPodSandbox", &ListPodSandboxRequest {})?;
        Ok(r.items.into_iter().map(|i| i.id).collect())
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let _: Empty = self.call(
            "StopPodSandbox",
            &SandboxId {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let _: Empty = self.call(
            "RemovePodSandbox",
            &SandboxId {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }
}

/// The network namespace path in a verbose PodSandboxStatus `info` (containerd: the OCI spec's
/// `linux.namespaces` entry of type `network`).
#[must_use]
pub fn netns_path(status: &PodSandboxStatusResponse) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    info.pointer("/runtimeSpec/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")?["path"]
        .as_str()
        .map(PathBuf::from)
}

/// A sandbox config as the kubelet sends it for pod `namespace/name`.
#[must_use]
pub fn sandbox_config(namespace: &str, name: &str, uid: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("app".to_owned(), name.to_owned())]),
        linux: Some(LinuxPodSandboxConfig::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_field_numbers_match_the_cri_proto() {
        let req = SandboxId {
            pod_sandbox_id: "abc".into(),
        };
        let framed = frame(&req);
        // Flag 0, length 5, then field 1 (wire type 2) "abc".
        assert_eq!(&framed[..], &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'b', b'c']);
        let back = SandboxId::decode(unframe(framed).unwrap()).unwrap();
        assert_eq!(back, req);
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
        assert!(unframe(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());

        // PodSandboxStatus.network (5) → PodSandboxNetworkStatus.ip (1).
        let status = PodSandboxStatus {
            id: "s".into(),
            state: 0,
            network: Some(PodSandboxNetworkStatus {
                ip: "10.1.2.3".into(),
                additional_ips: Vec::new(),
            }),
        };
        let bytes = status.encode_to_vec();
        assert_eq!(&bytes[..3], &[0x0a, 1, b's']);
        assert_eq!(bytes[3], (5 << 3) | 2);
    }

    #[test]
    fn the_netns_path_is_read_from_containerds_verbose_info() {
        let mut r = PodSandboxStatusResponse::default();
        r.info.insert(
            "info".into(),
            r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}"#.into(),
        );
        assert_eq!(netns_path(&r), Some(PathBuf::from("/var/run/netns/cni-1")));
        assert_eq!(netns_path(&PodSandboxStatusResponse::default()), None);
    }
}
