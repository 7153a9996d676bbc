//! Prometheus metrics. Label values come only from configuration (agency
//! ids, route ids, refusal codes, limits), never from request paths or
//! citizen IDs, so cardinality is bounded by the registry.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub refusals: IntCounterVec,
    pub duration: HistogramVec,
    pub quota_rejections: IntCounterVec,
    pub reloads: IntCounterVec,
    pub audit_records: IntGauge,
    pub audit_syncs: IntGauge,
    pub audit_write_failures: IntGauge,
    pub audit_writable: IntGauge,
    pub quota_backend_transitions: IntGauge,
    pub build_info: IntGaugeVec,
    pub cert_expiry_days: IntGaugeVec,
    pub crl_next_update_days: IntGaugeVec,
    pub upstream_duration: HistogramVec,
    pub tls_handshakes: IntCounter,
    pub tls_handshake_failures: IntCounterVec,
    /// Requests between head received and context dropped.
    pub inflight: IntGauge,
    pub verdict_expiry_days: IntGaugeVec,
    pub audit_checkpoints: IntGauge,
    pub audit_outcomes_lost: IntGauge,
    /// Forwarded requests the agency abandoned (reset, closed, cancelled).
    pub client_closed: IntCounter,
    /// Certificates admitted on a CRL past its nextUpdate, within
    /// `revocation.grace_s` (`on_unavailable: grace`).
    pub revocation_grace_admissions: IntCounter,
    /// Open agency connections on this instance, by agency (`-`: none matched).
    pub connections_open: IntGaugeVec,
    /// Connections refused service, by agency and reason
    /// (`too_many_connections`, `header_timeout`).
    pub connection_refusals: IntCounterVec,
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

/// Request latencies: 1 ms to 10 s.
fn latency_histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        labels,
    )
    .expect("static metric definition");
    r.register(Box::new(h.clone())).expect("unique metric name");
    h
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let build_info = gauge_vec(
            &r,
            "popgate_build_info",
            "Always 1; the version label says which build runs",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let duration = latency_histogram(
            &r,
            "popgate_request_duration_seconds",
            "Time from request head to response head, by agency and route",
            &["agency", "route"],
        );
        let upstream_duration = latency_histogram(
            &r,
            "popgate_upstream_duration_seconds",
            "Time from choosing the upstream to its response head, by route",
            &["route"],
        );
        let tls_handshakes = counter(
            &r,
            "popgate_tls_handshakes_total",
            "Handshakes whose client certificate was verified",
        );
        let client_closed = counter(
            &r,
            "popgate_client_closed_total",
            "Forwarded requests whose agency reset or closed the connection before the end",
        );
        let revocation_grace_admissions = counter(
            &r,
            "popgate_revocation_grace_admissions_total",
            "Handshakes admitted on a CRL past its nextUpdate, within revocation.grace_s",
        );
        Metrics {
            client_closed,
            revocation_grace_admissions,
            audit_checkpoints: gauge(
                &r,
                "popgate_audit_checkpoints_total",
                "Signed checkpoints of the audit chain head written since start",
            ),
            audit_outcomes_lost: gauge(
                &r,
                "popgate_audit_outcomes_lost_total",
                "Outcome records that could not be written (their access records are durable)",
            ),
            connections_open: gauge_vec(
                &r,
                "popgate_connections_open",
                "Open agency connections on this instance",
                &["agency"],
            ),
            connection_refusals: counter_vec(
                &r,
                "popgate_connection_refusals_total",
                "Connections refused service, by agency and reason",
                &["agency", "reason"],
            ),
            upstream_duration,
            tls_handshakes,
            tls_handshake_failures: counter_vec(
                &r,
                "popgate_tls_handshake_failures_total",
                "Client certificates refused in the handshake, by reason",
                &["reason"],
            ),
            inflight: gauge(
                &r,
                "popgate_inflight_requests",
                "Requests being processed right now",
            ),
            verdict_expiry_days: gauge_vec(
                &r,
                "popgate_admission_verdict_expiry_days",
                "Whole days until the agency's compliance verdict expires (negative: expired)",
                &["agency"],
            ),
            requests: counter_vec(
                &r,
                "popgate_requests_total",
                "Responses sent, by agency, route and status",
                &["agency", "route", "status"],
            ),
            refusals: counter_vec(
                &r,
                "popgate_refusals_total",
                "Refusals, by stable error code",
                &["code"],
            ),
            quota_rejections: counter_vec(
                &r,
                "popgate_quota_rejections_total",
                "Quota refusals, by agency and limit",
                &["agency", "limit"],
            ),
            reloads: counter_vec(
                &r,
                "popgate_config_reloads_total",
                "Registry reloads, by result",
                &["result"],
            ),
            audit_records: gauge(
                &r,
                "popgate_audit_records_total",
                "Audit records made durable since start",
            ),
            audit_syncs: gauge(
                &r,
                "popgate_audit_fsyncs_total",
                "Audit fdatasync calls since start (group commit: fewer than records)",
            ),
            audit_write_failures: gauge(
                &r,
                "popgate_audit_write_failures_total",
                "Audit write failures since start",
            ),
            audit_writable: gauge(
                &r,
                "popgate_audit_writable",
                "1 when the audit log accepts writes",
            ),
            quota_backend_transitions: gauge(
                &r,
                "popgate_quota_backend_transitions_total",
                "Redis quota backend up/down transitions",
            ),
            cert_expiry_days: gauge_vec(
                &r,
                "popgate_certificate_expiry_days",
                "Whole days until the certificate's notAfter (server; earliest client CA)",
                &["cert"],
            ),
            crl_next_update_days: gauge_vec(
                &r,
                "popgate_crl_next_update_days",
                "Whole days until the CRL's nextUpdate; past it every agency is refused",
                &["crl"],
            ),
            duration,
            build_info,
            registry: r,
        }
    }

    /// Adds a metric owned elsewhere (e.g. the audit writer's fsync histogram).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(c) {
            tracing::warn!(error = %e, "metric not registered");
        }
    }

    pub fn set_verdict_expiry(&self, days: &[(String, i64)]) {
        self.verdict_expiry_days.reset();
        for (agency, d) in days {
            self.verdict_expiry_days
                .with_label_values(&[agency])
                .set(*d);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
