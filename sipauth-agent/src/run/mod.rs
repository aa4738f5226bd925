//! The three ways to run: `run` (control plane and edge in one process,
//! the embedded default), `control` (API and store) and `edge` (SIP and
//! XDP, following a control plane).
#![forbid(unsafe_code)]

mod settings;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tower::Layer as _;
use tower_http::normalize_path::NormalizePathLayer;

pub use self::settings::{EdgeSettings, SettingsError};
use crate::config::Config;
use crate::http::{self, AppState};
use sipauth_control::ControlState;
use sipauth_digest::{Algorithm, NonceKey};
use sipauth_edge::cluster::{self, Cluster};
use sipauth_edge::metrics::Metrics;
use sipauth_edge::outbound::{self, MakeCall};
use sipauth_edge::records::{Calls, Sink};
use sipauth_edge::registrar::Registrar;
use sipauth_edge::view::{self, Views};
use sipauth_edge::{Bounds, DigestSettings, Edge, conn::ConnLimits, transport};
use sipauth_kernel::lockout::Lockouts;
use sipauth_kernel::maps::Xdp;
use sipauth_store::Store;

/// `sipauth run`.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let settings = EdgeSettings::new(&cfg)?;
    let control = start_control(&cfg).await?;
    let views = Arc::new(Views::new());
    tokio::spawn(follow_local(control.clone(), views.clone()));
    let sink = Sink::Store(control.store.clone());
    // Make Call requests go straight to this process's edge.
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let _ = control.originate.set(tx);
    let (edge_http, edge) = start_edge(&cfg, settings, &views, sink, Some(rx))?;
    // The API shows the registrations this process's edge holds (the
    // fleet's, when it belongs to one).
    let _ = control.registrations.set(edge.edge.registrar.clone());
    serve(
        &cfg,
        sipauth_control::router(control).merge(edge_http),
        Some(edge),
    )
    .await
}

/// `sipauth control`.
pub async fn control(cfg: Config) -> anyhow::Result<()> {
    let control = start_control(&cfg).await?;
    if control.edge_token.is_empty() {
        tracing::warn!("control.edge_token is empty: no edge can follow this control plane");
    }
    if cfg.cluster.redis_url.is_empty() {
        tracing::info!(
            "no cluster.redis_url: endpoints show as not registered (registrations live at the edges)"
        );
    } else {
        // Registrations live at the edges and in the fleet's Redis: the
        // API shows them from there, following without changing anything.
        let settings = EdgeSettings::new(&cfg)?;
        let registrar = Arc::new(Registrar::default());
        let _follower = Cluster::follow_registrations(
            &settings.cluster,
            registrar.clone(),
            Arc::new(cluster::Counters::default()),
        );
        let sweep = Arc::downgrade(&registrar);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_mins(1));
            while let Some(r) = sweep.upgrade() {
                r.sweep();
                drop(r);
                tick.tick().await;
            }
        });
        let _ = control.registrations.set(registrar);
    }
    serve(&cfg, sipauth_control::router(control), None).await
}

/// `sipauth edge`.
pub async fn edge(cfg: Config) -> anyhow::Result<()> {
    let settings = EdgeSettings::new(&cfg)?;
    anyhow::ensure!(
        !cfg.edge.control_url.is_empty(),
        "edge.control_url (--control) is required"
    );
    let views = Arc::new(Views::new());
    if let Some(kept) = view::load_persisted(&cfg.edge.state_dir) {
        tracing::info!(
            version = kept.version,
            "enforcing the kept snapshot until the control plane answers"
        );
        views.apply(kept);
    }
    tokio::spawn(view::follow_remote(
        cfg.edge.control_url.clone(),
        cfg.edge.token.clone(),
        cfg.edge.state_dir.clone(),
        views.clone(),
    ));
    let sink = Sink::remote(
        format!(
            "{}/v1/Edge/Calls",
            cfg.edge.control_url.trim_end_matches('/')
        ),
        cfg.edge.token.clone(),
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .context("HTTP client")?,
    );
    let (edge_http, edge) = start_edge(&cfg, settings, &views, sink, None)?;
    serve(&cfg, edge_http, Some(edge)).await
}

async fn start_control(cfg: &Config) -> anyhow::Result<Arc<ControlState>> {
    let store = Store::open(&cfg.control.database)
        .await
        .with_context(|| "opening the store (control.database)")?;
    let state = ControlState::new(
        store,
        cfg.sip.domain.clone(),
        cfg.control.edge_token.clone(),
    )
    .await?;
    for seed in &cfg.control.accounts {
        let name = if seed.name.is_empty() {
            seed.auth_id.as_str()
        } else {
            seed.name.as_str()
        };
        sipauth_control::create_account(&state, name, Some((&seed.auth_id, &seed.auth_token)))
            .await?;
    }
    Ok(state)
}

/// The capabilities loading and attaching the XDP program takes that
/// `effective` lacks. Root has them all; a service needs these three (and
/// CAP_NET_BIND_SERVICE only to listen below port 1024):
/// - CAP_BPF: maps, program load, opening pinned maps;
/// - CAP_NET_ADMIN: loading a networking program type, attaching it;
/// - CAP_PERFMON: without it the verifier applies its Spectre v1
///   restrictions and refuses the program's packet pointer arithmetic
///   ("pointer arithmetic with it prohibited for !root").
fn missing_for_xdp(effective: rustix::thread::CapabilitySet) -> Vec<&'static str> {
    use rustix::thread::CapabilitySet;
    [
        (CapabilitySet::BPF, "CAP_BPF"),
        (CapabilitySet::NET_ADMIN, "CAP_NET_ADMIN"),
        (CapabilitySet::PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(cap, _)| !effective.contains(*cap))
    .map(|(_, name)| name)
    .collect()
}

/// A started edge, as a stop drains it.
struct Running {
    edge: Arc<Edge>,
    /// Make Call's intake: what tells it to stop, and its task. `None`
    /// where the edge takes no Make Call (`sipauth edge`).
    make_calls: Option<(Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>)>,
}

impl Running {
    /// Stops taking calls (an INVITE let in gets 503 with Retry-After, a
    /// Make Call request 503) and waits, `within` at most, for the calls in
    /// progress to end and for every ended call's record to be written and
    /// its hangup_url told.
    async fn drain(self, within: std::time::Duration) {
        use std::sync::atomic::Ordering::Acquire;
        let metrics = &self.edge.metrics;
        let in_progress = || {
            (
                metrics.inbound_calls.load(Acquire),
                metrics.outbound_calls.load(Acquire),
            )
        };
        self.edge.stop_taking_calls();
        if let Some((stop, _)) = &self.make_calls {
            stop.notify_one();
        }
        let (inbound, outbound) = in_progress();
        tracing::info!(
            inbound,
            outbound,
            within_secs = within.as_secs(),
            "stopping: new calls are refused; waiting for the calls in progress"
        );
        let ended = async {
            if let Some((_, intake)) = self.make_calls {
                let _ = intake.await;
            }
            while in_progress() != (0, 0) || !self.edge.records_settled() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(within, ended).await.is_ok() {
            tracing::info!("calls ended, their records written and hangup_urls told");
        } else {
            let (inbound, outbound) = in_progress();
            tracing::warn!(
                inbound,
                outbound,
                "sip.drain_secs over: stopping with calls in progress"
            );
        }
    }
}

/// Starts XDP, the lockout table and the SIP listeners; returns the edge's
/// HTTP routes (`/metrics`, `/admin`) and the edge.
fn start_edge(
    cfg: &Config,
    settings: EdgeSettings,
    views: &Arc<Views>,
    sink: Sink,
    make_calls: Option<tokio::sync::mpsc::Receiver<MakeCall>>,
) -> anyhow::Result<(Router, Running)> {
    let xdp = if let Some(options) = &settings.xdp {
        let effective = rustix::thread::capabilities(None)
            .map_or(rustix::thread::CapabilitySet::empty(), |c| c.effective);
        let missing = missing_for_xdp(effective);
        if !missing.is_empty() {
            anyhow::bail!(
                "XDP needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and {} is missing: run as \
                 root, give sipauth these capabilities (the packaged sipauth.service does), or \
                 set xdp.mode = \"off\"",
                missing.join(" and ")
            );
        }
        let xdp = Arc::new(
            Xdp::start(options, &cfg.sip_ports(), &settings.lockout).context("starting XDP")?,
        );
        tokio::spawn(sync_maps(xdp.clone(), views.subscribe()));
        Some(xdp)
    } else {
        tracing::info!("XDP off: user space enforces lockouts alone");
        None
    };
    let lockouts = Arc::new(match &xdp {
        Some(xdp) => Lockouts::kernel(xdp.clone(), settings.lockout, &settings.never_lock)
            .context("writing the never-lock list to the XDP program")?,
        None => Lockouts::memory(settings.lockout, &settings.never_lock),
    });
    let metrics = Arc::new(Metrics::new());
    let key = if cfg.sip.nonce_secret.is_empty() {
        if !cfg.cluster.redis_url.is_empty() {
            tracing::warn!(
                "cluster.redis_url is set but sip.nonce_secret is not: a nonce from another \
                 edge will get a plain challenge here instead of stale=true; give every edge \
                 the same sip.nonce_secret"
            );
        }
        NonceKey::random()
    } else {
        let mut secret = [0u8; 32];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&cfg.sip.nonce_secret[2 * i..2 * i + 2], 16)
                .context("sip.nonce_secret")?;
        }
        NonceKey::new(secret)
    };
    let digest = DigestSettings {
        realm: cfg.sip.domain.clone(),
        algorithms: cfg
            .sip
            .challenge_algorithms
            .iter()
            .filter_map(|a| Algorithm::parse(Some(a)).map(|(alg, _)| alg))
            .collect(),
        nonce_ttl_secs: cfg.sip.nonce_ttl_secs,
        key,
        min_expires: cfg.sip.min_expires,
        max_expires: cfg.sip.max_expires,
    };
    let calls = Calls::new(
        sipauth_callback::Client::new(std::time::Duration::from_millis(
            cfg.sip.callback_timeout_ms,
        )),
        sink,
        metrics.clone(),
        settings.outbound,
    );
    let make_calls = make_calls.map(|rx| {
        let stop = Arc::new(tokio::sync::Notify::new());
        let intake = tokio::spawn(outbound::make_call::serve(rx, calls.clone(), stop.clone()));
        (stop, intake)
    });
    let edge = Edge::new(
        lockouts.clone(),
        metrics.clone(),
        views.subscribe(),
        digest,
        calls,
        &Bounds {
            unproven_replies_per_sec: cfg.sip.unproven_replies_per_sec,
            max_inbound_calls: cfg.sip.max_inbound_calls,
        },
        &settings.cluster,
    );
    // Every listener shares one set of TCP bounds; the total has to fit in
    // the open-file limit.
    let nofile = transport::raise_fd_limit();
    let mut tcp_limits = settings.tcp;
    tcp_limits.total = transport::total_within(tcp_limits.total, nofile);
    if tcp_limits.total < cfg.tcp.max_total {
        tracing::warn!(
            configured = cfg.tcp.max_total,
            nofile,
            total = tcp_limits.total,
            "tcp.max_total lowered to fit the open-file limit"
        );
    }
    let conn_limits = ConnLimits::new(tcp_limits, metrics.tcp.clone());
    tokio::spawn(transport::close_locked_out(
        conn_limits.clone(),
        Arc::downgrade(&edge),
    ));
    // TLS connections have the same bounds, counted on their own.
    let tls_limits = ConnLimits::new(tcp_limits, metrics.tls.clone());
    tokio::spawn(transport::close_locked_out(
        tls_limits.clone(),
        Arc::downgrade(&edge),
    ));
    for addr in &cfg.sip.listen {
        let udp = transport::bind_udp(*addr).with_context(|| format!("binding UDP {addr}"))?;
        let tcp = transport::bind_tcp(*addr).with_context(|| format!("binding TCP {addr}"))?;
        tokio::spawn(transport::serve_udp(udp, edge.clone()));
        tokio::spawn(transport::serve_stream(
            tcp,
            edge.clone(),
            conn_limits.clone(),
            None,
        ));
        tracing::info!(%addr, "SIP listening (UDP, TCP)");
    }
    if let Some(tls) = &settings.tls {
        for addr in &cfg.sip.tls_listen {
            let tcp = transport::bind_tcp(*addr).with_context(|| format!("binding TLS {addr}"))?;
            tokio::spawn(transport::serve_stream(
                tcp,
                edge.clone(),
                tls_limits.clone(),
                Some(tls.clone()),
            ));
            tracing::info!(%addr, "SIP listening (TLS)");
        }
        tokio::spawn(reload_on_hangup(tls.clone()));
    }
    if cfg.admin.token.is_empty() {
        tracing::info!("admin endpoints disabled: no admin.token");
    }
    let routes = http::router(Arc::new(AppState {
        edge: edge.clone(),
        xdp,
        views: views.clone(),
        admin_token: cfg.admin.token.clone(),
        lockout_duration: settings.lockout.duration(),
    }));
    Ok((routes, Running { edge, make_calls }))
}

/// Serves `app` on `http.listen` until SIGINT or SIGTERM, then drains
/// `edge` for `sip.drain_secs` at most (a second signal stops at once).
/// Paths are taken with or without their trailing slash; every error
/// answer is JSON.
async fn serve(cfg: &Config, app: Router, edge: Option<Running>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding HTTP {}", cfg.http.listen))?;
    tracing::info!(addr = %cfg.http.listen, "HTTP listening");
    let drain = std::time::Duration::from_secs(cfg.sip.drain_secs);
    let app =
        NormalizePathLayer::trim_trailing_slash().layer(sipauth_control::errors::json_errors(app));
    axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(app),
    )
    .with_graceful_shutdown(async move {
        shutdown().await;
        if let Some(edge) = edge {
            tokio::select! {
                () = edge.drain(drain) => {}
                () = shutdown() => tracing::warn!("second signal: stopping at once"),
            }
        }
    })
    .await
    .context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the TLS certificate and key again on each SIGHUP. New connections
/// get the new certificate; open ones, and the calls on them, keep theirs.
async fn reload_on_hangup(tls: Arc<sipauth_edge::tls::ServerTls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: the TLS certificate is read only at start");
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key read again"),
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: the TLS files cannot be used; the previous certificate stays");
            }
        }
    }
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The edge follows the in-process control plane (`sipauth run`): every
/// committed version is applied as it is made.
pub async fn follow_local(control: Arc<ControlState>, views: Arc<Views>) {
    let mut versions = control.versions();
    loop {
        match control.snapshot().await {
            Ok(s) => {
                views.apply(s.0.clone());
            }
            Err(e) => tracing::warn!(error = %e, "building the snapshot failed; retrying"),
        }
        if versions.changed().await.is_err() {
            return;
        }
    }
}

/// Writes every snapshot the edge applies into the XDP maps (applications
/// with an IP ACL, and the ACL entries), so the kernel judges ACL-gated
/// INVITEs by the same view as user space.
async fn sync_maps(xdp: Arc<Xdp>, mut view: sipauth_edge::view::View) {
    loop {
        let current = view.borrow_and_update().clone();
        let started = std::time::Instant::now();
        match xdp.sync_snapshot(&current.snapshot) {
            Ok(()) => tracing::debug!(
                version = current.version(),
                took_us = started.elapsed().as_micros(),
                "XDP maps synced"
            ),
            Err(e) => {
                tracing::error!(version = current.version(), error = %e, "syncing the XDP maps failed");
            }
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::thread::CapabilitySet;

    use super::missing_for_xdp;

    #[test]
    fn xdp_takes_three_capabilities_not_root() {
        assert_eq!(
            missing_for_xdp(CapabilitySet::empty()),
            ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
        );
        assert_eq!(
            missing_for_xdp(CapabilitySet::NET_BIND_SERVICE | CapabilitySet::BPF),
            ["CAP_NET_ADMIN", "CAP_PERFMON"]
        );
        assert_eq!(
            missing_for_xdp(CapabilitySet::BPF | CapabilitySet::NET_ADMIN),
            ["CAP_PERFMON"]
        );
        assert!(
            missing_for_xdp(CapabilitySet::BPF | CapabilitySet::NET_ADMIN | CapabilitySet::PERFMON)
                .is_empty()
        );
        assert!(missing_for_xdp(CapabilitySet::all()).is_empty());
    }
}
