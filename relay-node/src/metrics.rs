//! What the relay's operator watches: libp2p's own metrics (connections, bytes by
//! transport, relay events) and the relay's state as gauges (reservations and circuits held
//! now) with its refusals counted by reason. All of it is one Prometheus registry, served as
//! text by [`crate::http`] when `[metrics] listen` is set.
//!
//! libp2p's relay says neither which limit refused a request nor which connection a
//! reservation lives on, so two readings here are the relay's best knowledge:
//! a `resource_limit` refusal is `full` when the count was at its limit and `rate` when a
//! rate limiter must have refused it, and a device's reservations are capped at the
//! connections it still has when one of them closes.

use std::collections::HashMap;

use libp2p::{
    PeerId,
    allow_block_list::NotAllowed,
    metrics::{Metrics as Libp2pMetrics, Recorder, Registry},
    relay,
    swarm::{ListenError, SwarmEvent},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::config::Limits;

/// What was refused.
#[derive(
    Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
enum Request {
    /// A private relay's allowlist said no.
    connection,
    reservation,
    circuit,
}

/// Why, as a label value.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    request: Request,
    reason: &'static str,
}

/// The relay's metrics; fed every swarm event, read through the registry.
pub struct Metrics {
    libp2p: Libp2pMetrics,
    reservations: Gauge,
    circuits: Gauge,
    refusals: Family<Refusal, Counter>,
    /// Reservations held per device, to keep the gauge right as connections close.
    held: HashMap<PeerId, usize>,
    limits: Limits,
}

impl Metrics {
    /// Registers every metric in `registry` (which the transport's byte counters share).
    pub fn new(registry: &mut Registry, limits: Limits) -> Self {
        let libp2p = Libp2pMetrics::new(registry);
        let ours = registry.sub_registry_with_prefix("loopsy_relay");
        let reservations = Gauge::default();
        ours.register(
            "reservations",
            "Reservations held now (devices reachable through the relay)",
            reservations.clone(),
        );
        let circuits = Gauge::default();
        ours.register(
            "circuits",
            "Circuits open now (relayed connections)",
            circuits.clone(),
        );
        let refusals = Family::<Refusal, Counter>::default();
        ours.register(
            "refusals",
            "Requests refused, by request (reservation, circuit) and reason",
            refusals.clone(),
        );
        Self {
            libp2p,
            reservations,
            circuits,
            refusals,
            held: HashMap::new(),
            limits,
        }
    }

    /// Counts one swarm event.
    pub fn record<E>(&mut self, event: &SwarmEvent<E>) {
        self.libp2p.record(event);
        match event {
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                let left = *num_established as usize;
                if let Some(held) = self.held.get_mut(peer_id) {
                    *held = (*held).min(left);
                    if *held == 0 {
                        self.held.remove(peer_id);
                    }
                }
                self.update_reservations();
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                ..
            } if cause.downcast_ref::<NotAllowed>().is_some() => {
                self.refuse(Request::connection, "not_allowed");
            }
            _ => {}
        }
    }

    /// Counts one relay event.
    #[allow(deprecated)] // libp2p's failure events, deprecated but still emitted
    pub fn record_relay(&mut self, event: &relay::Event) {
        self.libp2p.record(event);
        use relay::Event::*;
        match event {
            ReservationReqAccepted {
                src_peer_id,
                renewed: false,
            } => {
                *self.held.entry(*src_peer_id).or_default() += 1;
                self.update_reservations();
            }
            ReservationTimedOut { src_peer_id } => {
                if let Some(held) = self.held.get_mut(src_peer_id) {
                    *held = held.saturating_sub(1);
                    if *held == 0 {
                        self.held.remove(src_peer_id);
                    }
                }
                self.update_reservations();
            }
            ReservationReqDenied {
                src_peer_id,
                status,
            } => {
                let reason = match status {
                    relay::StatusCode::ResourceLimitExceeded => {
                        let total: usize = self.held.values().sum();
                        let own = self.held.get(src_peer_id).copied().unwrap_or(0);
                        if total >= self.limits.reservations
                            || own > self.limits.reservations_per_peer
                        {
                            "full"
                        } else {
                            "rate"
                        }
                    }
                    other => status_reason(other),
                };
                self.refuse(Request::reservation, reason);
            }
            CircuitReqAccepted { .. } => {
                self.circuits.inc();
            }
            CircuitClosed { .. } if self.circuits.get() > 0 => {
                self.circuits.dec();
            }
            CircuitReqDenied { status, .. } => {
                let reason = match status {
                    relay::StatusCode::ResourceLimitExceeded => {
                        if self.circuits.get() >= self.limits.circuits as i64 {
                            "full"
                        } else {
                            // Per peer or per rate: libp2p does not say which.
                            "rate"
                        }
                    }
                    other => status_reason(other),
                };
                self.refuse(Request::circuit, reason);
            }
            CircuitReqOutboundConnectFailed { .. } => {
                self.refuse(Request::circuit, "destination_unreachable");
            }
            _ => {}
        }
    }

    /// Counts events of the other protocols libp2p has metrics for.
    pub fn record_identify(&mut self, event: &libp2p::identify::Event) {
        self.libp2p.record(event);
    }

    pub fn record_ping(&mut self, event: &libp2p::ping::Event) {
        self.libp2p.record(event);
    }

    fn refuse(&self, request: Request, reason: &'static str) {
        self.refusals
            .get_or_create(&Refusal { request, reason })
            .inc();
    }

    fn update_reservations(&self) {
        let total: usize = self.held.values().sum();
        self.reservations
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }
}

/// A relay status code as a label value.
fn status_reason(status: &relay::StatusCode) -> &'static str {
    use relay::StatusCode::*;
    match status {
        ResourceLimitExceeded => "resource_limit",
        ReservationRefused => "reservation_refused",
        PermissionDenied => "permission_denied",
        ConnectionFailed => "connection_failed",
        NoReservation => "no_reservation",
        MalformedMessage => "malformed_message",
        UnexpectedMessage => "unexpected_message",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    #[test]
    fn reservations_circuits_and_refusals_are_counted() {
        let mut registry = Registry::default();
        let limits = Limits {
            reservations: 2,
            ..Limits::default()
        };
        let mut metrics = Metrics::new(&mut registry, limits);
        let (a, b) = (PeerId::random(), PeerId::random());
        for peer in [a, b] {
            metrics.record_relay(&relay::Event::ReservationReqAccepted {
                src_peer_id: peer,
                renewed: false,
            });
        }
        metrics.record_relay(&relay::Event::ReservationReqAccepted {
            src_peer_id: a,
            renewed: true,
        });
        metrics.record_relay(&relay::Event::ReservationReqDenied {
            src_peer_id: PeerId::random(),
            status: relay::StatusCode::ResourceLimitExceeded,
        });
        metrics.record_relay(&relay::Event::CircuitReqAccepted {
            src_peer_id: a,
            dst_peer_id: b,
        });
        metrics.record_relay(&relay::Event::CircuitReqDenied {
            src_peer_id: a,
            dst_peer_id: PeerId::random(),
            status: relay::StatusCode::NoReservation,
        });
        let shown = text(&registry);
        assert!(shown.contains("loopsy_relay_reservations 2\n"), "{shown}");
        assert!(shown.contains("loopsy_relay_circuits 1\n"), "{shown}");
        assert!(
            shown.contains(
                "loopsy_relay_refusals_total{request=\"reservation\",reason=\"full\"} 1\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains(
                "loopsy_relay_refusals_total{request=\"circuit\",reason=\"no_reservation\"} 1\n"
            ),
            "{shown}"
        );

        metrics.record_relay(&relay::Event::ReservationTimedOut { src_peer_id: a });
        metrics.record_relay(&relay::Event::CircuitClosed {
            src_peer_id: a,
            dst_peer_id: b,
            error: None,
        });
        metrics.record_relay(&relay::Event::ReservationReqDenied {
            src_peer_id: a,
            status: relay::StatusCode::ResourceLimitExceeded,
        });
        let shown = text(&registry);
        assert!(shown.contains("loopsy_relay_reservations 1\n"), "{shown}");
        assert!(shown.contains("loopsy_relay_circuits 0\n"), "{shown}");
        assert!(
            shown.contains(
                "loopsy_relay_refusals_total{request=\"reservation\",reason=\"rate\"} 1\n"
            ),
            "{shown}"
        );
    }
}
