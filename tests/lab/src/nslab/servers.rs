//! The pods' servers: `ferrite-lab serve --echo-peer` (and `iperf3 -s` when asked) in every
//! pod, up before the lab is handed out.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{NsLab, NsLabError, POD_HTTP, POD_IPERF, POD_TCP, POD_UDP};
use crate::probe::{Limit, ProbeConfig, Proto, probe};
use crate::wait::wait_until;

impl NsLab {
    pub(super) fn start_servers(&mut self) -> Result<(), NsLabError> {
        for node in &mut self.nodes {
            let mut servers = Vec::new();
            for (i, pod) in node.pods.pods().iter().enumerate() {
                let mut command = Command::new(&self.lab_bin);
                command
                    .args(["serve", "--echo-peer", "--name"])
                    .arg(format!("{}-pod-{}", node.name, i + 1))
                    .args(["--tcp", &format!("0.0.0.0:{POD_TCP}")])
                    .args(["--tcp", &format!("[::]:{POD_TCP}")])
                    .args(["--udp", &format!("0.0.0.0:{POD_UDP}")])
                    .args(["--udp", &format!("[::]:{POD_UDP}")])
                    .args(["--http", &format!("0.0.0.0:{POD_HTTP}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                servers.push(pod.netns.spawn(&mut command)?);
                if self.config.iperf3 {
                    let mut iperf = Command::new("iperf3");
                    iperf
                        .args(["-s", "-p", &POD_IPERF.to_string()])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    servers.push(pod.netns.spawn(&mut iperf)?);
                }
            }
            node.servers = servers;
        }
        for node in &self.nodes {
            for (i, pod) in node.pods.pods().iter().enumerate() {
                let target = SocketAddr::from((pod.v4, POD_TCP));
                let mut cfg = ProbeConfig::new(target, Proto::Tcp, Limit::Count(1));
                cfg.timeout = Duration::from_millis(300);
                let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                    node.ns().run(|| probe(&cfg)).is_ok_and(|r| r.ok == 1)
                });
                if up.is_err() {
                    return Err(NsLabError::Other(format!(
                        "{} ({target}) never answered its node",
                        node.pod_name(i)
                    )));
                }
                if self.config.iperf3 {
                    let iperf = SocketAddr::from((pod.v4, POD_IPERF));
                    let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                        node.ns()
                            .run(|| {
                                std::net::TcpStream::connect_timeout(
                                    &iperf,
                                    Duration::from_millis(300),
                                )
                            })
                            .is_ok_and(|r| r.is_ok())
                    });
                    if up.is_err() {
                        return Err(NsLabError::Other(format!(
                            "iperf3 in {} ({iperf}) never answered",
                            node.pod_name(i)
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
