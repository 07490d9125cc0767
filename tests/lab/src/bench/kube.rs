//! `bench --sections kube`: the agent's Kubernetes source against the fake API server
//! (`ferrite-fakeapi`, in-process): time from agent start to every service in the pinned maps,
//! agent memory after the sync, and watch event → map update latency, next to the `dir:`
//! source's file write → map update latency for the same change in the same run.

pub(super) mod cluster;
mod render;

pub use render::markdown;

use std::path::Path;
use std::time::{Duration, Instant};

use ferrite_fakeapi::{FakeApi, FakeApiError};
use serde::Serialize;

use super::results::{Cell, ratio};
use cluster::{AgentProc, Frontends};

pub(super) const CRDS: &str = include_str!("../../../../k3s-addon/crds.yaml");
const SYNC_TIMEOUT: Duration = Duration::from_mins(3);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The sleep between two reads of the pinned map while waiting for a change.
const POLL: Duration = Duration::from_micros(50);
/// DESIGN.md's memory target for the agent at 1k services.
pub(super) const TARGET_KB_AT_1K: u64 = 20 * 1024;
/// Services the latency events rotate over (each gets an endpoint added, then removed).
pub(super) const EVENT_SERVICES: usize = 10;

/// What one run measures.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// Services per row.
    pub rows: Vec<usize>,
    /// Ready endpoints per service (one `EndpointSlice` each).
    pub per_service: usize,
    /// Watch events per row for the latency (half add an endpoint, half remove it).
    pub events: usize,
}

impl KubeSettings {
    #[must_use]
    pub fn new(quick: bool) -> Self {
        Self {
            rows: if quick {
                vec![200]
            } else {
                vec![1_000, 10_000]
            },
            per_service: 5,
            events: if quick { 40 } else { 200 },
        }
    }
}

/// Latency of one kind of change, in ms.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Latency {
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Mean time between two reads of the pinned map while waiting (the detection resolution).
    pub poll_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KubeRow {
    pub services: usize,
    pub endpoints: usize,
    /// Agent process start → every service's frontend in the pinned map.
    pub sync_ms: Cell<f64>,
    pub rss_kb: Cell<u64>,
    pub hwm_kb: Cell<u64>,
    /// `EndpointSlice` changed in the API server → frontend's slot count changed in the map.
    pub watch_to_map: Cell<Latency>,
    /// Baseline: the same change written to the `dir:` source's folder → map.
    pub dir_file_to_map: Cell<Latency>,
    /// `dir:` agent memory with the same objects (same-run baseline).
    pub dir_rss_kb: Cell<u64>,
    /// kube p50 / dir p50.
    pub kube_vs_dir_p50: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KubeBench {
    pub rows: Vec<KubeRow>,
}

impl KubeBench {
    #[must_use]
    pub fn incomplete(&self) -> bool {
        self.rows.iter().any(|r| {
            r.sync_ms.is_not_run()
                || r.rss_kb.is_not_run()
                || r.watch_to_map.is_not_run()
                || r.dir_file_to_map.is_not_run()
        })
    }
}

/// Runs the section into `results.kube`.
pub fn section(quick: bool, ferrite: Result<&Path, &String>, work: &Path) -> Cell<KubeBench> {
    let settings = KubeSettings::new(quick);
    let measured = match ferrite {
        Ok(ferrite) => Ok(measure(ferrite, &work.join("kube"), &settings)),
        Err(e) => Err(e.clone()),
    };
    if let Err(e) = &measured {
        super::progress(&format!("kube: {e}"));
    }
    measured.into()
}

/// Every row, each with a fresh API server and agents.
pub fn measure(ferrite: &Path, work: &Path, settings: &KubeSettings) -> KubeBench {
    let mut rows = Vec::new();
    for &services in &settings.rows {
        super::progress(&format!("kube: {services} services"));
        let dir = work.join(format!("{services}"));
        let _ = std::fs::remove_dir_all(&dir);
        let row = match std::fs::create_dir_all(&dir) {
            Ok(()) => measure_row(ferrite, &dir, services, settings),
            Err(e) => failed_row(
                services,
                settings,
                &format!("create {}: {e}", dir.display()),
            ),
        };
        rows.push(row);
    }
    KubeBench { rows }
}

pub(super) fn failed_row(services: usize, settings: &KubeSettings, why: &str) -> KubeRow {
    KubeRow {
        services,
        endpoints: services * settings.per_service,
        sync_ms: Cell::not_run(why),
        rss_kb: Cell::not_run(why),
        hwm_kb: Cell::not_run(why),
        watch_to_map: Cell::not_run(why),
        dir_file_to_map: Cell::not_run(why),
        dir_rss_kb: Cell::not_run(why),
        kube_vs_dir_p50: None,
    }
}

/// The services whose slices the latency events change.
fn targets(services: usize) -> Vec<usize> {
    (0..EVENT_SERVICES.min(services))
        .map(|k| (k * 7919) % services)
        .collect()
}

fn measure_row(ferrite: &Path, dir: &Path, services: usize, settings: &KubeSettings) -> KubeRow {
    let mut row = failed_row(services, settings, "not reached");
    match kube_row(ferrite, dir, services, settings) {
        Ok((sync, (rss, hwm), latency)) => {
            row.sync_ms = Cell::Value(sync.as_secs_f64() * 1e3);
            row.rss_kb = Cell::Value(rss);
            row.hwm_kb = Cell::Value(hwm);
            row.watch_to_map = latency;
        }
        Err(e) => {
            super::progress(&format!("kube {services}: {e}"));
            row.sync_ms = Cell::not_run(e.clone());
            row.rss_kb = Cell::not_run(e.clone());
            row.hwm_kb = Cell::not_run(e.clone());
            row.watch_to_map = Cell::not_run(e);
        }
    }
    match dir_row(ferrite, dir, services, settings) {
        Ok((rss, latency)) => {
            row.dir_rss_kb = Cell::Value(rss);
            row.dir_file_to_map = latency;
        }
        Err(e) => {
            super::progress(&format!("dir {services}: {e}"));
            row.dir_rss_kb = Cell::not_run(e.clone());
            row.dir_file_to_map = Cell::not_run(e);
        }
    }
    row.kube_vs_dir_p50 = ratio(
        row.watch_to_map.value().map(|l| l.p50_ms),
        row.dir_file_to_map.value().map(|l| l.p50_ms),
    );
    row
}

fn api_error(e: &FakeApiError) -> String {
    format!("fake API server: {e}")
}

/// Waits until every service has a frontend with slots.
fn wait_synced(agent: &mut AgentProc, map: &Frontends, services: usize) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let last = map.count(services - 1).is_some_and(|c| c > 0);
        if last && (0..services).all(|i| map.count(i).is_some_and(|c| c > 0)) {
            return Ok(());
        }
        if !agent.running() {
            return Err(format!("agent exited: {}", agent.tail()));
        }
        if start.elapsed() > SYNC_TIMEOUT {
            let missing = (0..services).filter(|&i| map.count(i).is_none()).count();
            return Err(format!(
                "{missing} of {services} services not in the map after {SYNC_TIMEOUT:?}: {}",
                agent.tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

type KubeMeasured = (Duration, (u64, u64), Cell<Latency>);

fn kube_row(
    ferrite: &Path,
    dir: &Path,
    services: usize,
    settings: &KubeSettings,
) -> Result<KubeMeasured, String> {
    let api_dir = dir.join("apiserver");
    std::fs::create_dir_all(&api_dir).map_err(|e| format!("create {}: {e}", api_dir.display()))?;
    let api = FakeApi::start(&api_dir).map_err(|e| api_error(&e))?;
    api.load_yaml(CRDS).map_err(|e| api_error(&e))?;
    for i in 0..services {
        api.put(cluster::service(i)).map_err(|e| api_error(&e))?;
        api.put(cluster::slice(
            i,
            settings.per_service,
            settings.per_service,
        ))
        .map_err(|e| api_error(&e))?;
    }
    let kubeconfig = api.kubeconfig().as_os_str().to_owned();
    let start = Instant::now();
    let mut agent = AgentProc::start(
        ferrite,
        dir,
        "kube",
        "kube",
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    )?;
    let map = agent.frontends(SYNC_TIMEOUT)?;
    wait_synced(&mut agent, &map, services)?;
    let sync = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let memory = agent.memory()?;
    let latency = events(&mut agent, &map, services, settings, |i, endpoints| {
        api.put(cluster::slice(i, endpoints, settings.per_service))
            .map(drop)
            .map_err(|e| api_error(&e))
    })
    .into();
    Ok((sync, memory, latency))
}

fn dir_row(
    ferrite: &Path,
    dir: &Path,
    services: usize,
    settings: &KubeSettings,
) -> Result<(u64, Cell<Latency>), String> {
    let folder = dir.join("dir-source");
    std::fs::create_dir_all(&folder).map_err(|e| format!("create {}: {e}", folder.display()))?;
    let targets = targets(services);
    let mut objects = Vec::with_capacity(services * 2);
    for i in 0..services {
        objects.push(cluster::service(i));
        if !targets.contains(&i) {
            objects.push(cluster::slice(
                i,
                settings.per_service,
                settings.per_service,
            ));
        }
    }
    let write = |name: &str, text: &str| {
        let staging = dir.join(format!(".{name}.staging"));
        std::fs::write(&staging, text).map_err(|e| format!("write {}: {e}", staging.display()))?;
        std::fs::rename(&staging, folder.join(name))
            .map_err(|e| format!("rename into {}: {e}", folder.display()))
    };
    write("services.yaml", &cluster::yaml(&objects))?;
    let slice_file = |i: usize, endpoints: usize| {
        write(
            &format!("slice-{i}.yaml"),
            &cluster::yaml(&[cluster::slice(i, endpoints, settings.per_service)]),
        )
    };
    for &i in &targets {
        slice_file(i, settings.per_service)?;
    }
    let source = format!("dir:{}", folder.display());
    let mut agent = AgentProc::start(ferrite, dir, "dir", &source, &[])?;
    let map = agent.frontends(SYNC_TIMEOUT)?;
    wait_synced(&mut agent, &map, services)?;
    std::thread::sleep(Duration::from_secs(1));
    let (rss, _) = agent.memory()?;
    let latency = events(&mut agent, &map, services, settings, slice_file).into();
    Ok((rss, latency))
}

/// `settings.events` changes, alternately adding an endpoint to a target service's slice and
/// removing it again; each timed from just before `change` to the first read of the pinned map
/// showing the service's new slot count.
fn events(
    agent: &mut AgentProc,
    map: &Frontends,
    services: usize,
    settings: &KubeSettings,
    mut change: impl FnMut(usize, usize) -> Result<(), String>,
) -> Result<Latency, String> {
    let targets = targets(services);
    let mut samples = Vec::with_capacity(settings.events);
    let (mut polls, mut polling) = (0u64, Duration::ZERO);
    for event in 0..settings.events {
        let i = targets[(event / 2) % targets.len()];
        let endpoints = if event % 2 == 0 {
            settings.per_service + 1
        } else {
            settings.per_service
        };
        let before = map.count(i);
        let start = Instant::now();
        change(i, endpoints)?;
        loop {
            polls += 1;
            if map.count(i) != before {
                break;
            }
            if start.elapsed() > EVENT_TIMEOUT {
                if !agent.running() {
                    return Err(format!("agent exited: {}", agent.tail()));
                }
                return Err(format!(
                    "event {event}: svc-{i} still has {before:?} slots after {EVENT_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
        let took = start.elapsed();
        polling += took;
        samples.push(took.as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(5));
    }
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let n = samples.len();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within a few hundred samples"
        )]
        let index = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        samples[index]
    };
    #[expect(clippy::cast_precision_loss, reason = "poll counts are small")]
    let poll_us = polling.as_secs_f64() * 1e6 / polls.max(1) as f64;
    Ok(Latency {
        events: samples.len(),
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: samples.last().copied().unwrap_or_default(),
        poll_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_distinct_services_in_range() {
        let t = targets(1_000);
        assert_eq!(t.len(), EVENT_SERVICES);
        let mut sorted = t.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), t.len());
        assert!(t.iter().all(|&i| i < 1_000));
        assert_eq!(targets(3).len(), 3);
    }

    #[test]
    fn cluster_ips_and_objects_are_distinct() {
        assert_eq!(cluster::cluster_ip(0).to_string(), "10.100.0.1");
        assert_eq!(cluster::cluster_ip(9_999).to_string(), "10.100.39.16");
        let slice = cluster::slice(3, 6, 5);
        assert_eq!(slice["endpoints"].as_array().map(Vec::len), Some(6));
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-3"
        );
    }
}
