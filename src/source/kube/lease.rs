//! Leader election on a `coordination.k8s.io/v1` Lease, for "one status writer per cluster".
//!
//! As in client-go: a candidate takes the lease when it is free, or when its record has not
//! changed for the lease duration as measured on the candidate's own clock (no clock agreement
//! between nodes is needed); every write names the resourceVersion it read, so two candidates
//! never both win (the loser gets 409 Conflict).

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Lease timing (client-go's defaults: 15 s lease, renewed every 2 s, given up after 10 s
/// without a successful renewal).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// client-go's proportions (15 s / 10 s / 2 s) for another lease duration (whole seconds,
    /// at least one: the Lease records seconds).
    pub fn with_duration(duration: Duration) -> Self {
        let duration = duration.max(Duration::from_secs(1));
        Self {
            duration,
            renew_deadline: duration * 2 / 3,
            retry: duration * 2 / 15,
        }
    }
}

/// One candidate for one lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// The holder and renew time last seen, and when (on our clock) they were first seen.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

/// What one attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Leading,
    /// Someone else holds it.
    Following { holder: String },
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: None,
        }
    }

    fn seconds(d: Duration) -> i32 {
        i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
    }

    /// Creates the lease held by us; a 409 means another candidate created it first.
    async fn create(&self, now: MicroTime) -> Result<Attempt, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(Self::seconds(self.timing.duration)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Following {
                holder: "(just created by another candidate)".into(),
            }),
            Err(error) => Err(error),
        }
    }

    /// One acquire-or-renew round trip.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(existing) = self.api.get_opt(&self.name).await? else {
            return self.create(now).await;
        };
        let spec = existing.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (holder.clone(), spec.renew_time.clone());
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(h, r, _)| (h, r) != (&record.0, &record.1));
        if changed {
            self.observed = Some((record.0, record.1, Instant::now()));
        }
        let observed_at = self.observed.as_ref().map_or_else(Instant::now, |o| o.2);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.duration, Duration::from_secs);
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if let Some(other) = holder.as_ref().filter(|_| !ours)
            && observed_at.elapsed() < duration
        {
            return Ok(Attempt::Following {
                holder: other.clone(),
            });
        }
        let mut lease = existing;
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.identity.clone());
        new_spec.lease_duration_seconds = Some(Self::seconds(self.timing.duration));
        new_spec.renew_time = Some(now.clone());
        if !ours {
            new_spec.acquire_time = Some(now);
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                let spec = updated.spec.unwrap_or_default();
                self.observed = Some((spec.holder_identity, spec.renew_time, Instant::now()));
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Following {
                holder: "(updated concurrently by another candidate)".into(),
            }),
            Err(error) => Err(error),
        }
    }

    /// Keeps trying to lead; `leading` says whether we do. Leadership is given up when renewals
    /// fail for the renew deadline (the API server being unreachable included).
    pub async fn run(mut self, leading: watch::Sender<bool>) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    last_renewal = Some(Instant::now());
                    if !*leading.borrow() {
                        info!(lease = %self.name, identity = %self.identity, "acquired the lease: this node writes status");
                        leading.send_replace(true);
                    }
                }
                Ok(Attempt::Following { holder }) => {
                    if *leading.borrow() {
                        info!(lease = %self.name, %holder, "lost the lease");
                        leading.send_replace(false);
                    } else {
                        debug!(lease = %self.name, %holder, "lease held by another node");
                    }
                    last_renewal = None;
                }
                Err(error) => {
                    warn!(lease = %self.name, error = %error, "lease request failed");
                    if *leading.borrow()
                        && last_renewal.is_none_or(|t| t.elapsed() >= self.timing.renew_deadline)
                    {
                        warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                        leading.send_replace(false);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.timing.retry) => {}
                () = leading.closed() => return,
            }
        }
    }
}
