//! `sipauth run`: edge and HTTP surface in one process.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{Config, XdpMode};
use crate::edge::{Edge, lockout::Lockouts, transport};
use crate::http::{self, AppState};
use crate::maps::Xdp;
use crate::metrics::Metrics;

/// Starts everything, then serves until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let xdp = if cfg.xdp.mode == XdpMode::Off {
        tracing::info!("XDP off: user space enforces lockouts alone");
        None
    } else {
        if !rustix::process::geteuid().is_root() {
            anyhow::bail!(
                "XDP needs root (CAP_BPF and CAP_NET_ADMIN); run as root or set xdp.mode = \"off\""
            );
        }
        Some(Arc::new(
            Xdp::start(&cfg.xdp, &cfg.sip_ports()).context("starting XDP")?,
        ))
    };
    let lockouts = Arc::new(match &xdp {
        Some(xdp) => Lockouts::kernel(xdp.clone()),
        None => Lockouts::memory(),
    });
    let metrics = Arc::new(Metrics::new());
    let edge = Arc::new(Edge::new(lockouts.clone(), metrics.clone()));

    for addr in &cfg.sip.listen {
        let udp = transport::bind_udp(*addr).with_context(|| format!("binding UDP {addr}"))?;
        let tcp = transport::bind_tcp(*addr).with_context(|| format!("binding TCP {addr}"))?;
        tokio::spawn(transport::serve_udp(udp, edge.clone()));
        tokio::spawn(transport::serve_tcp(tcp, edge.clone()));
        tracing::info!(%addr, "SIP listening (UDP, TCP)");
    }

    let state = Arc::new(AppState {
        metrics,
        lockouts,
        xdp,
        admin_token: cfg.admin.token.clone(),
        lockout_duration: cfg.lockout.duration(),
    });
    if state.admin_token.is_empty() {
        tracing::info!("admin endpoints disabled: no admin.token");
    }
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding HTTP {}", cfg.http.listen))?;
    tracing::info!(addr = %cfg.http.listen, "HTTP listening (/metrics, /admin)");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown())
        .await
        .context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
