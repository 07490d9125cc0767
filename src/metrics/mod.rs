//! Prometheus metrics (`/metrics`, OpenMetrics text format): families named after Cilium's where
//! the meaning matches. Two kinds of values:
//!
//! - **events** the agent counts as they happen ([`Metrics`]: source snapshots, reconcile
//!   latencies, L2 announcements / takeovers / failover durations, CNI ADD/DEL from the plugin);
//! - **state** read when scraped ([`Scrape`]: what is programmed, map fill from the pinned maps,
//!   L2 membership, the process's memory and CPU).
//!
//! Nothing is global: the agent owns one [`Metrics`]; tests build their own.

pub mod cni;
mod process;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use process::ProcessStats;

/// The content type of the OpenMetrics text format (what Prometheus asks for first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the classic Prometheus text format (0.0.4), for scrapers that do not
/// accept OpenMetrics.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header takes OpenMetrics (absent or `*/*`: yes, the richer format).
#[must_use]
pub fn accepts_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or_default().trim();
        media == "application/openmetrics-text" || media == "*/*" || media == "application/*"
    })
}

/// The OpenMetrics exposition `text` in the classic text format: counters are named with their
/// `_total` suffix in HELP/TYPE, no `# UNIT` and no `# EOF`.
#[must_use]
pub fn to_classic(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                if counters.contains(name) {
                    out.push_str(prefix);
                    out.push_str(name);
                    out.push_str("_total");
                    out.push_str(&rest[name.len()..]);
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Reconcilers whose latency is measured.
pub const RECONCILE_LB: &str = "lb";
pub const RECONCILE_ROUTING: &str = "routing";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcilerLabels {
    pub reconciler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabels {
    /// `ipv4` (gratuitous ARP) or `ipv6` (unsolicited neighbour advertisement).
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniLabels {
    /// `ADD` or `DEL`.
    pub command: String,
    /// `success` or `failure`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubsystemLabels {
    pub subsystem: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowTypeLabels {
    pub flow_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowDropLabels {
    pub flow_type: String,
    pub reason: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Latency buckets from 100 µs to ~13 s (reconciles, CNI commands).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Failover buckets from 50 ms to ~25 s (ferrite aims ≤1 s; Cilium's default is 10–20 s).
fn failover_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 10))
}

/// Event counters and histograms, updated by the agent's parts as things happen.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    source_events: Family<SourceLabels, Counter>,
    reconcile_duration: HistogramFamily<ReconcilerLabels>,
    reconcile_errors: Family<ReconcilerLabels, Counter>,
    l2_announcements: Family<FamilyLabels, Counter>,
    l2_takeovers: Counter,
    l2_releases: Counter,
    l2_failover: Histogram,
    cni_operations: Family<CniLabels, Counter>,
    cni_duration: HistogramFamily<CommandLabels>,
    cni_events_malformed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let source_events = Family::<SourceLabels, Counter>::default();
        registry.register(
            "ferrite_source_events",
            "Snapshots of the desired state received from the source (kube watch events or dir: changes, coalesced)",
            source_events.clone(),
        );
        let reconcile_duration = HistogramFamily::new_with_constructor(latency_histogram as _);
        registry.register(
            "ferrite_reconcile_duration_seconds",
            "Time of one reconcile: plan plus writes into the maps (lb) or the kernel's routes (routing)",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ReconcilerLabels, Counter>::default();
        registry.register(
            "ferrite_reconcile_errors",
            "Reconciles that failed to apply (retried on the next change)",
            reconcile_errors.clone(),
        );
        let l2_announcements = Family::<FamilyLabels, Counter>::default();
        registry.register(
            "ferrite_l2_gratuitous_announcements",
            "Gratuitous ARP (ipv4) and unsolicited neighbour advertisements (ipv6) sent for owned addresses",
            l2_announcements.clone(),
        );
        let l2_takeovers = Counter::default();
        registry.register(
            "ferrite_l2_takeovers",
            "Addresses this node started announcing that another node announced before",
            l2_takeovers.clone(),
        );
        let l2_releases = Counter::default();
        registry.register(
            "ferrite_l2_releases",
            "Addresses this node stopped announcing",
            l2_releases.clone(),
        );
        let l2_failover = failover_histogram();
        registry.register(
            "ferrite_l2_failover_duration_seconds",
            "On a takeover from a failed owner: time from the last moment this node saw that owner alive to this node announcing",
            l2_failover.clone(),
        );
        let cni_operations = Family::<CniLabels, Counter>::default();
        registry.register(
            "ferrite_cni_operations",
            "CNI commands run by the plugin on this node, by command and outcome",
            cni_operations.clone(),
        );
        let cni_duration = HistogramFamily::new_with_constructor(latency_histogram as _);
        registry.register(
            "ferrite_cni_operation_duration_seconds",
            "Time the plugin took for a CNI command",
            cni_duration.clone(),
        );
        let cni_events_malformed = Counter::default();
        registry.register(
            "ferrite_cni_events_malformed",
            "Datagrams on the CNI event socket that were not a plugin's event",
            cni_events_malformed.clone(),
        );
        let m = Self {
            registry,
            source_events,
            reconcile_duration,
            reconcile_errors,
            l2_announcements,
            l2_takeovers,
            l2_releases,
            l2_failover,
            cni_operations,
            cni_duration,
            cni_events_malformed,
        };
        // Every series a dashboard expects exists from the start, at zero.
        for r in [RECONCILE_LB, RECONCILE_ROUTING] {
            let l = ReconcilerLabels {
                reconciler: r.into(),
            };
            let _ = m.reconcile_duration.get_or_create(&l);
            let _ = m.reconcile_errors.get_or_create(&l);
        }
        for family in ["ipv4", "ipv6"] {
            let _ = m.l2_announcements.get_or_create(&FamilyLabels {
                family: family.into(),
            });
        }
        for command in [cni::ADD, cni::DEL] {
            for outcome in [cni::SUCCESS, cni::FAILURE] {
                let _ = m.cni_operations.get_or_create(&CniLabels {
                    command: command.into(),
                    outcome: outcome.into(),
                });
            }
            let _ = m.cni_duration.get_or_create(&CommandLabels {
                command: command.into(),
            });
        }
        m
    }

    /// The agent's source is `source`: its series exists from the start, at zero.
    pub fn source_configured(&self, source: &str) {
        let _ = self.source_events.get_or_create(&SourceLabels {
            source: source.into(),
        });
    }

    /// A snapshot arrived from `source` (`kube` or `dir`).
    pub fn source_event(&self, source: &str) {
        self.source_events
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }

    /// One reconcile of `reconciler` took `took`; `ok` is false when it failed to apply.
    pub fn reconciled(&self, reconciler: &str, took: std::time::Duration, ok: bool) {
        let l = ReconcilerLabels {
            reconciler: reconciler.into(),
        };
        self.reconcile_duration
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        if !ok {
            self.reconcile_errors.get_or_create(&l).inc();
        }
    }

    /// A gratuitous ARP (IPv4) or unsolicited NA (IPv6) went out.
    pub fn l2_announced(&self, ip: std::net::IpAddr) {
        let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        self.l2_announcements
            .get_or_create(&FamilyLabels {
                family: family.into(),
            })
            .inc();
    }

    /// This node took an address over from another node; `failover` is the time since that
    /// node was last seen alive, when it failed (none when it is still alive: a planned move).
    pub fn l2_takeover(&self, failover: Option<std::time::Duration>) {
        self.l2_takeovers.inc();
        if let Some(d) = failover {
            self.l2_failover.observe(d.as_secs_f64());
        }
    }

    pub fn l2_released(&self) {
        self.l2_releases.inc();
    }

    /// A CNI event from the plugin.
    pub fn cni_event(&self, event: &cni::CniEvent) {
        self.cni_operations
            .get_or_create(&CniLabels {
                command: event.command.clone(),
                outcome: if event.ok { cni::SUCCESS } else { cni::FAILURE }.into(),
            })
            .inc();
        self.cni_duration
            .get_or_create(&CommandLabels {
                command: event.command.clone(),
            })
            .observe(event.duration_secs());
    }

    pub fn cni_event_malformed(&self) {
        self.cni_events_malformed.inc();
    }

    /// The whole exposition: these events, then the state in `scrape`.
    #[must_use]
    pub fn encode(&self, scrape: &Scrape) -> String {
        let mut out = String::new();
        let mut state = Registry::default();
        scrape.register(&mut state);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &state);
        let _ = encode_eof(&mut out);
        out
    }
}

/// How full one pinned map is.
#[derive(Clone, Debug, PartialEq)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub max_entries: u64,
}

/// Flows the datapath decided, by kind and drop reason (`None`: forwarded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowCount {
    pub kind: String,
    pub drop_reason: Option<String>,
    pub flows: u64,
}

/// Packets NetworkPolicy decided for one policy and direction (`policy` empty when denied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyCount {
    pub policy: String,
    pub direction: String,
    pub verdict: String,
    pub packets: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    pub direction: String,
    pub verdict: String,
}

/// State read at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// Services in the last applied snapshot, frontends and backends programmed.
    pub services: u64,
    pub frontends: u64,
    pub backends: u64,
    /// The last applied generation.
    pub generation: u64,
    pub maps: Vec<MapFill>,
    /// The programs' flow verdict counters (every flow, with events on or off).
    pub flows: Vec<FlowCount>,
    /// NetworkPolicy's per-policy verdict counters.
    pub policy: Vec<PolicyCount>,
    /// Flows in the masquerade's SNAT table (absent without north-south).
    pub snat_flows: Option<u64>,
    /// Alive members of the L2 membership, this node included.
    pub l2_members: u64,
    /// Addresses this node announces.
    pub l2_owned: u64,
    /// Refused membership datagrams by reason.
    pub l2_rejected: Vec<(String, u64)>,
    /// Subsystem name → ready.
    pub subsystems: Vec<(String, bool)>,
    pub source_errors: u64,
    pub process: ProcessStats,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

impl Scrape {
    fn register(&self, r: &mut Registry) {
        gauge(
            r,
            "ferrite_services",
            "Services in the last applied snapshot",
            self.services,
        );
        gauge(
            r,
            "ferrite_frontends",
            "Service frontends programmed (socket LB and north-south)",
            self.frontends,
        );
        gauge(
            r,
            "ferrite_backends",
            "Backends programmed in the socket LB's backend map",
            self.backends,
        );
        gauge(
            r,
            "ferrite_apply_generation",
            "Generation of the last snapshot applied to the maps",
            self.generation,
        );
        self.register_maps(r);
        self.register_flows(r);
        let verdicts = Family::<PolicyLabels, Counter>::default();
        for c in &self.policy {
            verdicts
                .get_or_create(&PolicyLabels {
                    policy: c.policy.clone(),
                    direction: c.direction.clone(),
                    verdict: c.verdict.clone(),
                })
                .inc_by(c.packets);
        }
        r.register(
            "ferrite_policy_verdicts",
            "Packets NetworkPolicy allowed (by the policy that allowed them) or denied, by direction",
            verdicts,
        );
        if let Some(n) = self.snat_flows {
            gauge(
                r,
                "ferrite_masquerade_snat_flows",
                "Masqueraded flows in the SNAT table",
                n,
            );
        }
        gauge(
            r,
            "ferrite_l2_members",
            "Alive members of the L2 membership, this node included",
            self.l2_members,
        );
        gauge(
            r,
            "ferrite_l2_owned_addresses",
            "LoadBalancer addresses this node answers ARP/NDP for",
            self.l2_owned,
        );
        self.register_rejected(r);
        let ready = Family::<SubsystemLabels, Gauge<i64>>::default();
        for (name, ok) in &self.subsystems {
            ready
                .get_or_create(&SubsystemLabels {
                    subsystem: name.clone(),
                })
                .set(i64::from(*ok));
        }
        r.register(
            "ferrite_subsystem_ready",
            "1 when the subsystem reports ready (what /readyz and `ferrite status` show)",
            ready,
        );
        gauge(
            r,
            "ferrite_source_errors",
            "Objects the source cannot read right now (dir: files that do not parse)",
            self.source_errors,
        );
        self.process.register(r);
    }

    /// `ferrite_bpf_map_pressure` and `ferrite_bpf_map_entries`.
    fn register_maps(&self, r: &mut Registry) {
        let pressure = Family::<MapLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let entries = Family::<MapLabels, Gauge<i64>>::default();
        for m in &self.maps {
            let l = MapLabels {
                map_name: m.name.clone(),
            };
            #[expect(
                clippy::cast_precision_loss,
                reason = "map sizes are far below 2^52; the ratio is a gauge"
            )]
            let ratio = if m.max_entries == 0 {
                0.0
            } else {
                m.entries as f64 / m.max_entries as f64
            };
            pressure.get_or_create(&l).set(ratio);
            entries
                .get_or_create(&l)
                .set(i64::try_from(m.entries).unwrap_or(i64::MAX));
        }
        r.register(
            "ferrite_bpf_map_pressure",
            "Fill of each pinned eBPF hash map: entries / max_entries",
            pressure,
        );
        r.register(
            "ferrite_bpf_map_entries",
            "Entries in each pinned eBPF hash map",
            entries,
        );
    }

    /// `ferrite_flows_forwarded` and `ferrite_flows_dropped`: counted per new flow (a
    /// connect, a first packet), not per packet as Cilium's `drop_count_total` is.
    fn register_flows(&self, r: &mut Registry) {
        let forwarded = Family::<FlowTypeLabels, Counter>::default();
        let dropped = Family::<FlowDropLabels, Counter>::default();
        for c in &self.flows {
            match &c.drop_reason {
                None => {
                    forwarded
                        .get_or_create(&FlowTypeLabels {
                            flow_type: c.kind.clone(),
                        })
                        .inc_by(c.flows);
                }
                Some(reason) => {
                    dropped
                        .get_or_create(&FlowDropLabels {
                            flow_type: c.kind.clone(),
                            reason: reason.clone(),
                        })
                        .inc_by(c.flows);
                }
            }
        }
        r.register(
            "ferrite_flows_forwarded",
            "New flows the datapath translated or passed, by type (sock-lb, north-south, masquerade)",
            forwarded,
        );
        r.register(
            "ferrite_flows_dropped",
            "New flows the datapath refused or dropped, by type and reason",
            dropped,
        );
    }

    fn register_rejected(&self, r: &mut Registry) {
        let rejected = Family::<ReasonLabels, Counter>::default();
        for (reason, n) in &self.l2_rejected {
            rejected
                .get_or_create(&ReasonLabels {
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        r.register(
            "ferrite_l2_membership_rejected",
            "Membership datagrams refused, by reason",
            rejected,
        );
    }
}

#[cfg(test)]
mod tests;
