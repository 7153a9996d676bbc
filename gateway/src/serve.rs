//! Assembles the gateway from a validated config and runs it under pingora.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use crate::config::{ConfigError, GatewayConfig};
use crate::error::GatewayError;
use crate::proxy::Gateway;

/// Loads everything, then serves until SIGTERM/SIGINT. Only returns on a
/// configuration error (or a failure to start): pingora exits the process
/// when it shuts down.
pub fn run(config_path: &Path) -> Result<(), GatewayError> {
    let config = GatewayConfig::load(config_path)?;
    let (registry, material) = config.check()?;
    let tls_state = material.server_parts(&config.tls)?;
    let audit = crate::audit::AuditLog::open(&config.audit).map_err(|e| match e {
        crate::audit::AuditError::Config(m) => ConfigError::new(&config.audit.dir, m).into(),
        other => GatewayError::runtime(format!("audit log {}", config.audit.dir.display()), other),
    })?;

    let mut server = pingora_server(&config);
    let quota = quota_engine(&config, &registry)?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    tls_state.verifier.set_metrics(metrics.clone());
    if let Some(fetch) = &config.crl_fetch {
        let fetch_metrics = crate::revocation::fetch::FetchMetrics::new();
        for c in fetch_metrics.collectors() {
            metrics.register(c);
        }
        let fetcher = crate::revocation::fetch::spawn(fetch, &config.tls.client_ca, fetch_metrics)
            .map_err(|e| {
                GatewayError::runtime(
                    format!("revocation.crl.cache_dir {}", fetch.cache_dir.display()),
                    e,
                )
            })?;
        tls_state.verifier.set_crl_fetcher(fetcher);
        tracing::info!(cache = %fetch.cache_dir.display(), "fetching CRLs (distribution points and revocation.crl.urls)");
    }
    metrics.register(Box::new(audit.stats().fsync_seconds.clone()));
    // Shipping to the cluster's store runs beside serving, never in its
    // way: readiness does not depend on the store.
    let shipper = match (&config.audit.store, &config.audit.instance) {
        (Some(store), Some(instance)) => {
            let ship_metrics = crate::audit::ship::ShipMetrics::new();
            for c in ship_metrics.collectors() {
                metrics.register(c);
            }
            let handle = crate::audit::ship::spawn(
                &config.audit.dir,
                instance.clone(),
                store,
                audit.stats().head_seq.clone(),
                ship_metrics,
            )
            .map_err(|e| GatewayError::runtime("starting the audit shipper", e))?;
            tracing::info!(%instance, store = %crate::audit::store::redact(&store.url), "shipping the audit log to the store");
            Some(handle)
        }
        _ => None,
    };
    let drain = crate::shutdown::Drain::new(metrics.inflight.clone(), config.drain_timeout);
    let admission = admission(&config, &metrics)?;
    if let Some(addr) = config.admin_listen {
        crate::admin::spawn(
            addr,
            crate::admin::Admin {
                metrics: metrics.clone(),
                audit: audit.clone(),
                upstream: config.upstream.clone(),
                quota: quota.clone(),
                tls: tls_state.clone(),
                drain: drain.clone(),
            },
        )
        .map_err(|e| GatewayError::runtime(format!("admin.listen {addr}"), e))?;
        tracing::info!(%addr, "admin listener: /healthz /readyz /metrics");
    }
    let registry = Arc::new(ArcSwap::from_pointee(registry));
    reload_on_sighup(
        config.clone(),
        tls_state.clone(),
        registry.clone(),
        quota.clone(),
        metrics.clone(),
    )
    .map_err(|e| GatewayError::runtime("installing the SIGHUP handler", e))?;
    let audit_at_exit = audit.clone();
    let hook = crate::edge::ConnectionHook {
        table: crate::edge::ConnectionTable::new(
            config.limits.max_connections_per_agency,
            metrics.clone(),
        ),
        verifier: tls_state.verifier.clone(),
        registry: registry.clone(),
    };
    let ocsp = config.ocsp.clone().map(|settings| {
        let m =
            crate::revocation::ocsp::OcspMetrics::new(metrics.revocation_grace_admissions.clone());
        for c in m.collectors() {
            metrics.register(c);
        }
        Arc::new(crate::revocation::ocsp::OcspChecker::new(
            settings,
            config.tls.revocation_grace,
            m,
        ))
    });
    let gateway = Gateway {
        ocsp,
        admission,
        drain: drain.clone(),
        metrics: metrics.clone(),
        quota,
        registry,
        verifier: tls_state.verifier.clone(),
        upstream: config.upstream.clone(),
        limits: config.limits,
        audit,
    };
    let proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    let edge = crate::edge::EdgeApp::new(proxy, config.limits, metrics.clone());
    let tls_config = tls_state
        .server_config()
        .map_err(|e| ConfigError::new(&config.source, format!("TLS listener settings: {e}")))?;
    let front = crate::edge::TlsFront {
        acceptor: pingora::listeners::tls::Acceptor::from_server_config(tls_config),
        hook,
        app: Arc::new(edge),
        handshake_timeout: config.limits.header_timeout,
        idle_timeout: config.limits.idle_timeout,
        metrics,
    };
    let mut service = pingora::services::listening::Service::new("popgate".to_owned(), front);
    // No L4 read buffer: rustls reads into its own (4 KiB, shrunk when
    // idle), so pingora's 64 KiB buffer only added a copy, and every page a
    // request ever filled stayed resident while the connection idled.
    service.add_listener(
        pingora::listeners::ListenerConfig::tcp(config.listen.to_string())
            .l4_buffer(pingora::listeners::L4BufferSettings::default().read(0)),
    );
    server.add_service(service);
    tracing::info!(
        listen = %config.listen,
        upstream = %config.upstream.url,
        config = %config.source.display(),
        "popgate listening (mutual TLS required)"
    );
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(crate::shutdown::DrainingSignal(drain)),
    });
    // Listeners are closed and requests drained: seal the open segment so
    // the log at rest carries no unsealed tail.
    match audit_at_exit.seal_now(std::time::Duration::from_secs(10)) {
        Ok(()) => tracing::info!("audit log sealed; exiting"),
        Err(e) => tracing::error!(error = %e, "audit log not sealed at exit"),
    }
    if let Some(s) = shipper {
        // Ship the seal and the `closed` mark too, if the store is there.
        s.finish(std::time::Duration::from_secs(5));
    }
    std::process::exit(0)
}

/// pingora's server: our thread count, one upstream attempt, prompt
/// shutdown (popgate drains on its own signal first), files in a private
/// run directory.
fn pingora_server(config: &GatewayConfig) -> Server {
    let mut conf = ServerConf {
        threads: config.threads,
        // Handover between old and new processes is not used; shut down
        // promptly but let in-flight requests finish.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        // One attempt: a retry would send the same request to the registry
        // again under a single access record.
        max_retries: 1,
        ..ServerConf::default()
    };
    let run_dir = std::env::temp_dir().join(format!("popgate-{}", std::process::id()));
    conf.pid_file = run_dir.join("popgate.pid").to_string_lossy().into_owned();
    conf.upgrade_sock = run_dir.join("upgrade.sock").to_string_lossy().into_owned();
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// The quota engine: local limits, shared through Redis when configured.
fn quota_engine(
    config: &GatewayConfig,
    registry: &crate::registry::Registry,
) -> Result<Arc<crate::quota::QuotaEngine>, GatewayError> {
    let quota = crate::quota::QuotaEngine::new(
        &registry.quota_limits(),
        config.quota_state_dir.clone(),
        Arc::new(crate::quota::SystemClock),
    )
    .map_err(|e| {
        GatewayError::runtime(
            format!("quota state {}", config.quota_state_dir.display()),
            e,
        )
    })?;
    Ok(Arc::new(match &config.quota_redis {
        Some(r) => quota.with_cluster(
            crate::quota::cluster::Cluster::new(&r.url, &r.key_prefix, r.failure_mode, r.timeout)
                .map_err(|e| ConfigError::new(&config.source, e))?,
        ),
        None => quota,
    }))
}

/// Compliance verdicts, when `admission:` is configured, watched for changes.
fn admission(
    config: &GatewayConfig,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<Option<Arc<crate::admission::Admission>>, GatewayError> {
    let Some(a) = &config.admission else {
        return Ok(None);
    };
    let adm = Arc::new(crate::admission::Admission::new(a.clone())?);
    crate::admission::spawn_watcher(adm.clone(), metrics.clone())
        .map_err(|e| GatewayError::runtime("starting the verdict watcher", e))?;
    Ok(Some(adm))
}

/// SIGHUP — or a change to any of the files involved, noticed by polling
/// their size and mtime four times a second — re-reads the agency registry
/// (routes, grants, statuses, quotas) and the TLS material (server
/// certificate, CA bundle, CRLs). New requests and handshakes see the new
/// state; in-flight requests finish undisturbed. A broken file is rejected
/// with its located error and the current state keeps serving (a file
/// caught half-written is simply re-read on the next change). Registry and
/// TLS are applied independently.
fn reload_on_sighup(
    config: GatewayConfig,
    tls: crate::tls::TlsState,
    registry: Arc<ArcSwap<crate::registry::Registry>>,
    quota: Arc<crate::quota::QuotaEngine>,
    metrics: Arc<crate::metrics::Metrics>,
) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let mut watched = vec![
        config.registry_path.clone(),
        config.tls.cert.clone(),
        config.tls.key.clone(),
        config.tls.client_ca.clone(),
    ];
    watched.extend(config.tls.crls.iter().cloned());
    // Fetched CRLs are renamed into this directory: its mtime moves.
    watched.extend(config.tls.crl_cache.iter().cloned());
    let fingerprint = move || -> Vec<Option<(std::time::SystemTime, u64)>> {
        watched
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| m.modified().ok().map(|t| (t, m.len())))
            })
            .collect()
    };
    std::thread::Builder::new()
        .name("popgate-reload".into())
        .spawn(move || {
            let mut last = fingerprint();
            loop {
                let hup = signals.pending().count() > 0;
                let now = fingerprint();
                if !hup && now == last {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    continue;
                }
                if !hup {
                    tracing::info!("configuration files changed; reloading");
                }
                last = now;
                match crate::tls::TlsMaterial::load(&config.tls).and_then(|m| m.apply(&config.tls, &tls)) {
                    Ok(dropped) => {
                        metrics.reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(
                            forgotten_certificates = dropped,
                            "TLS material reloaded (server certificate, CA bundle, CRLs)"
                        );
                    }
                    Err(e) => {
                        metrics.reloads.with_label_values(&["rejected"]).inc();
                        tracing::error!(error = %e, "TLS reload rejected; keeping the current material");
                    }
                }
                let path = &config.registry_path;
                match crate::registry::Registry::load(path) {
                    Ok(new) => {
                        quota.reload(&new.quota_limits());
                        tracing::info!(
                            registry = %path.display(),
                            agencies = new.agencies.len(),
                            routes = new.routes.len(),
                            "registry reloaded"
                        );
                        registry.store(Arc::new(new));
                        metrics.reloads.with_label_values(&["ok"]).inc();
                    }
                    Err(e) => {
                        metrics.reloads.with_label_values(&["rejected"]).inc();
                        tracing::error!(error = %e, "registry reload rejected; keeping the current one")
                    }
                }
            }
        })?;
    Ok(())
}
