//! The "l2" and "routing" readiness: what the L2 membership and the pod-network routing loop
//! published (the `/v1/l2` membership view, the `/v1/routes` view) turned into a subsystem
//! state once a second. Pure functions of those views; [`report`] publishes them.
//!
//! - `l2` is ready when the membership is bound (or `--l2-standalone`) and has no error. Not
//!   bound — no address known yet, a bind that failed (the address is not on this host, the port
//!   is taken), no key — is not ready, with the reason as its last error: a node that cannot
//!   take part in the membership claims nothing, and readiness says so instead of falling back
//!   to deciding alone.
//! - `routing` is ready when the last pass applied every route of the plan: none failed, none is
//!   unreachable or blocked by a route ferrite did not add, and the pass itself did not fail.

use std::sync::PoisonError;

use super::readiness::{L2, ROUTING, Readiness};
use crate::api::{L2MembershipView, SharedState};
use crate::routing::task::RoutesView;

/// A subsystem's state: ready, what it does now, the error (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub ready: bool,
    pub detail: String,
    pub error: Option<String>,
}

impl State {
    fn ready(detail: String) -> Self {
        Self {
            ready: true,
            detail,
            error: None,
        }
    }

    fn failing(detail: String, error: Option<String>) -> Self {
        Self {
            ready: false,
            detail,
            error,
        }
    }
}

/// The `l2` state from the membership view; `open_error` is why the L2 part could not start.
#[must_use]
pub fn l2_state(membership: &L2MembershipView, open_error: Option<&str>) -> State {
    if let Some(e) = open_error {
        return State::failing(
            "L2 announcements unavailable: the responder could not be opened".into(),
            Some(e.to_owned()),
        );
    }
    match membership.mode.as_str() {
        "standalone" => {
            State::ready("standalone (--l2-standalone): this node decides alone".into())
        }
        "bound" => {
            let detail = format!(
                "membership bound to {} (from {}, key {})",
                membership.bind.as_deref().unwrap_or("?"),
                membership.bind_from.as_deref().unwrap_or("?"),
                membership.key.as_deref().unwrap_or("?"),
            );
            match &membership.error {
                None => State::ready(detail),
                Some(e) => State::failing(format!("{detail}: {e}"), Some(e.clone())),
            }
        }
        "unbound" => {
            let why = membership
                .error
                .clone()
                .unwrap_or_else(|| "no reason given".into());
            State::failing(
                format!("membership not bound, announcing nothing: {why}"),
                Some(why),
            )
        }
        _ => State::failing("membership not started: no snapshot yet".into(), None),
    }
}

/// The `routing` state from the routing loop's view.
#[must_use]
pub fn routing_state(view: &RoutesView) -> State {
    if view.last_sync_unix_ms == 0 {
        return match &view.last_error {
            Some(e) => State::failing(
                format!("{} routing: the first pass failed", view.mode),
                Some(e.clone()),
            ),
            None => State::failing(
                format!("{} routing: waiting for the first snapshot", view.mode),
                None,
            ),
        };
    }
    let failed: Vec<String> = view
        .routes
        .iter()
        .filter(|r| r.state != "ok")
        .map(|r| {
            format!(
                "{} ({}): {}",
                r.cidr,
                r.node,
                r.error.as_deref().unwrap_or(&r.state)
            )
        })
        .collect();
    let ok = view.routes.len() - failed.len();
    let vxlan = view
        .vxlan
        .as_ref()
        .map(|v| format!(", VXLAN on {} (VNI {})", v.device, v.vni))
        .unwrap_or_default();
    let summary = format!(
        "{} routing: {ok} of {} remote PodCIDR routes applied{vxlan}",
        view.mode,
        view.routes.len()
    );
    let mut errors = failed;
    // Plan problems not tied to a route (e.g. VXLAN without a local InternalIP).
    errors.extend(
        view.problems
            .iter()
            .filter(|p| !view.routes.iter().any(|r| p.contains(&r.cidr)))
            .cloned(),
    );
    if let Some(e) = &view.last_error {
        errors.push(format!("last pass: {e}"));
    }
    if errors.is_empty() {
        State::ready(summary)
    } else {
        let joined = errors.join("; ");
        State::failing(format!("{summary}; {joined}"), Some(joined))
    }
}

/// Publishes both states from the shared views. `routing_on` is false with `--routing off`;
/// `l2_problem` (detail, error) is set when the L2 responder could not load or attach.
pub fn report(
    shared: &SharedState,
    ready: &Readiness,
    routing_on: bool,
    l2_problem: Option<(String, String)>,
) {
    let (l2, routes) = {
        let guard = shared.read().unwrap_or_else(PoisonError::into_inner);
        let routes = guard
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (guard.l2.membership.clone(), routes)
    };
    // The responder's own problem (not loaded, not attached somewhere) comes first.
    let s = match l2_problem {
        Some((detail, error)) => State::failing(detail, Some(error)),
        None => l2_state(&l2, None),
    };
    ready.set(L2, s.ready, s.detail, s.error);
    let s = if routing_on {
        routing_state(&routes)
    } else {
        State::ready("off (--routing off)".into())
    };
    ready.set(ROUTING, s.ready, s.detail, s.error);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::task::{RouteView, VxlanView};

    fn bound() -> L2MembershipView {
        L2MembershipView {
            mode: "bound".into(),
            bind: Some("192.168.50.11:7946".into()),
            bind_from: Some("Node InternalIP".into()),
            key: Some("3f2a9c01".into()),
            ..L2MembershipView::default()
        }
    }

    #[test]
    fn bound_membership_is_ready_and_says_where() {
        let s = l2_state(&bound(), None);
        assert!(s.ready, "{s:?}");
        assert!(s.detail.contains("192.168.50.11:7946"), "{s:?}");
        assert!(s.detail.contains("Node InternalIP"), "{s:?}");
        assert_eq!(s.error, None);
    }

    #[test]
    fn a_bind_failure_is_not_ready_with_the_error() {
        let m = L2MembershipView {
            mode: "unbound".into(),
            error: Some(
                "binding 192.168.50.99:7946: Cannot assign requested address (os error 99)".into(),
            ),
            ..L2MembershipView::default()
        };
        let s = l2_state(&m, None);
        assert!(!s.ready);
        assert!(
            s.detail.contains("Cannot assign requested address"),
            "{s:?}"
        );
        assert_eq!(s.error, m.error);
    }

    #[test]
    fn a_bound_membership_with_an_error_is_not_ready() {
        let mut m = bound();
        m.error = Some("no key file /etc/ferrite/l2.key".into());
        let s = l2_state(&m, None);
        assert!(!s.ready);
        assert_eq!(s.error, m.error);
    }

    #[test]
    fn standalone_is_ready_and_a_responder_that_failed_to_open_is_not() {
        let m = L2MembershipView {
            mode: "standalone".into(),
            ..L2MembershipView::default()
        };
        assert!(l2_state(&m, None).ready);
        let s = l2_state(&m, Some("opening fe_l2_v1: permission denied"));
        assert!(!s.ready);
        assert_eq!(
            s.error.as_deref(),
            Some("opening fe_l2_v1: permission denied")
        );
        let s = l2_state(&L2MembershipView::default(), None);
        assert!(!s.ready, "not started yet: {s:?}");
    }

    fn route(cidr: &str, state: &str, error: Option<&str>) -> RouteView {
        RouteView {
            node: "node2".into(),
            cidr: cidr.into(),
            mode: "native".into(),
            via: Some("192.168.50.12".into()),
            device: Some("eth0".into()),
            state: state.into(),
            error: error.map(str::to_owned),
        }
    }

    fn synced(routes: Vec<RouteView>) -> RoutesView {
        RoutesView {
            mode: "auto".into(),
            node: "node1".into(),
            routes,
            last_sync_unix_ms: 1,
            ..RoutesView::default()
        }
    }

    #[test]
    fn routing_before_the_first_pass_is_not_ready() {
        let v = RoutesView {
            mode: "auto".into(),
            ..RoutesView::default()
        };
        let s = routing_state(&v);
        assert!(!s.ready);
        assert!(s.detail.contains("waiting"), "{s:?}");
        let v = RoutesView {
            last_error: Some("netlink: EPERM".into()),
            ..v
        };
        assert_eq!(routing_state(&v).error.as_deref(), Some("netlink: EPERM"));
    }

    #[test]
    fn every_route_applied_is_ready() {
        let mut v = synced(vec![route("10.244.2.0/24", "ok", None)]);
        v.vxlan = Some(VxlanView {
            device: "ferrite.vxlan".into(),
            vni: 7,
            ..VxlanView::default()
        });
        let s = routing_state(&v);
        assert!(s.ready, "{s:?}");
        assert!(s.detail.contains("1 of 1"), "{s:?}");
        assert!(s.detail.contains("VXLAN"), "{s:?}");
        assert!(routing_state(&synced(Vec::new())).ready, "no other node");
    }

    #[test]
    fn a_route_in_error_or_a_failed_pass_is_not_ready_and_named() {
        let blocked = "a route to 10.244.3.0/24 that ferrite did not add is in the main table";
        let v = synced(vec![
            route("10.244.2.0/24", "ok", None),
            route("10.244.3.0/24", "error", Some(blocked)),
        ]);
        let s = routing_state(&v);
        assert!(!s.ready);
        assert!(s.detail.contains("1 of 2"), "{s:?}");
        assert!(
            s.error.as_deref().is_some_and(|e| e.contains(blocked)),
            "{s:?}"
        );

        let mut v = synced(vec![route("10.244.2.0/24", "ok", None)]);
        v.last_error = Some("setting the overlay map: ENOENT".into());
        let s = routing_state(&v);
        assert!(!s.ready);
        assert!(
            s.error.as_deref().is_some_and(|e| e.contains("ENOENT")),
            "{s:?}"
        );

        let mut v = synced(Vec::new());
        v.problems = vec!["VXLAN needs this node's InternalIP on a local device".into()];
        assert!(!routing_state(&v).ready);
    }
}
