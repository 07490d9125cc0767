//! The measuring tools of the north-south section: iperf3 and wrk run in the client's netns,
//! their output parsed, and a path checked with one HTTP request.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_lab::{Child, NsLab};

use super::NsSettings;

/// `iperf3 -c` from the client: receiver-side bits per second.
pub(super) fn iperf3(lab: &NsLab, target: SocketAddr, seconds: u32) -> Result<f64, String> {
    iperf3_from(lab.client(0).ns(), target, seconds)
}

/// `iperf3 -c` from `ns`: receiver-side bits per second.
pub(in crate::bench) fn iperf3_from(
    ns: &ferrite_lab::Ns,
    target: SocketAddr,
    seconds: u32,
) -> Result<f64, String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut cmd = ns.command("iperf3").map_err(|e| e.to_string())?;
        cmd.args([
            "-c",
            &target.ip().to_string(),
            "-p",
            &target.port().to_string(),
        ])
        .args(["-t", &seconds.to_string(), "-J"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let child = Child::spawn(&mut cmd).map_err(|e| e.to_string())?;
        let out = child
            .output_within(Duration::from_secs(u64::from(seconds) + 20))
            .map_err(|e| e.to_string())?;
        match parse_iperf3(&out.stdout) {
            Ok(bps) => return Ok(bps),
            // "the server is busy running a test": the previous run is still closing.
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn parse_iperf3(json: &[u8]) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("iperf3 -J output: {e}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3: {err}"));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| "iperf3 -J output has no end.sum_received.bits_per_second".to_owned())
}

/// One wrk run: (requests/s, p99 µs, errors).
pub(super) fn wrk(
    lab: &NsLab,
    target: SocketAddr,
    s: &NsSettings,
) -> Result<(f64, f64, u64), String> {
    let mut cmd = lab
        .client(0)
        .ns()
        .command("wrk")
        .map_err(|e| e.to_string())?;
    cmd.args([
        "-t",
        &s.wrk_threads.to_string(),
        "-c",
        &s.wrk_connections.to_string(),
    ])
    .args(["-d", &format!("{}s", s.seconds), "--latency"])
    .arg(format!("http://{target}/"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = Child::spawn(&mut cmd).map_err(|e| e.to_string())?;
    let out = child
        .output_within(Duration::from_secs(u64::from(s.seconds) + 20))
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_wrk(&text)
}

/// `123.45us` / `1.20ms` / `2.00s` → µs.
fn duration_us(text: &str) -> Option<f64> {
    let (num, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    match unit {
        "us" => Some(n),
        "ms" => Some(n * 1e3),
        "s" => Some(n * 1e6),
        "m" => Some(n * 60e6),
        _ => None,
    }
}

fn parse_wrk(text: &str) -> Result<(f64, f64, u64), String> {
    let mut rps = None;
    let mut p99 = None;
    let mut errors = 0u64;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => rps = n.parse::<f64>().ok(),
            ["99%", d] => p99 = duration_us(d),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                errors += n.parse::<u64>().unwrap_or(0);
            }
            _ => {}
        }
    }
    match (rps, p99) {
        (Some(r), Some(p)) => Ok((r, p, errors)),
        _ => Err(format!("unexpected wrk output: {}", text.trim())),
    }
}

/// Checks a path with one HTTP request: 200 from the expected backend.
pub(in crate::bench) fn check_path(
    lab: &NsLab,
    target: SocketAddr,
    backend: &str,
) -> Result<(), String> {
    let mut last = String::new();
    let ok =
        ferrite_lab::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || match lab.http_get(0, target, "/") {
                Ok(Ok(r)) if r.status == 200 && r.body.starts_with(backend) => true,
                Ok(Ok(r)) => {
                    last = format!("HTTP {} {:?}", r.status, r.body.trim());
                    false
                }
                Ok(Err(e)) => {
                    last = e.to_string();
                    false
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            },
        );
    ok.map(drop)
        .map_err(|_| format!("{target} did not answer from {backend}: {last}"))
}

/// Whether the tools are installed (a missing one turns the section into "not run").
pub fn tools_missing() -> Option<String> {
    let missing: Vec<&str> = ["iperf3", "wrk"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    (!missing.is_empty()).then(|| format!("apt-get install {}", missing.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let text = "Running 3s test @ http://172.30.0.10:80/\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   312.00us  100.00us   2.10ms   90.00%\n    Req/Sec    45.10k     2.00k   50.00k    70.00%\n  Latency Distribution\n     50%  300.00us\n     75%  350.00us\n     90%  400.00us\n     99%    1.20ms\n  135300 requests in 3.00s, 10.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  45100.50\nTransfer/sec:      3.33MB\n";
        let (rps, p99, errors) = parse_wrk(text).unwrap();
        assert!((rps - 45100.5).abs() < 1e-9);
        assert!((p99 - 1200.0).abs() < 1e-9);
        assert_eq!(errors, 7);
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(duration_us("2.00s"), Some(2e6));
        assert_eq!(duration_us("12us"), Some(12.0));
    }

    #[test]
    fn iperf3_json_parses() {
        let ok = br#"{"start":{},"end":{"sum_sent":{"bits_per_second":9.5e9},"sum_received":{"bits_per_second":9.4e9}}}"#;
        assert!((parse_iperf3(ok).unwrap() - 9.4e9).abs() < 1.0);
        let busy = br#"{"start":{},"error":"the server is busy running a test. try again later"}"#;
        assert!(parse_iperf3(busy).unwrap_err().contains("busy"));
    }
}
