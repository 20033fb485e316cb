//! SIGHUP: the node re-reads `config.toml` and `trust.toml` and applies, without a
//! restart and without touching running sessions or copies, what can change live: the
//! default grants and introductions, the exec and file policies, the relays (a
//! reservation taken on each new one, one let go), and each member's grants, name and
//! policies in the trust store. A stream already admitted keeps what it
//! was admitted with; the next one is checked against the new settings. What needs a
//! restart (name, listen addresses, mDNS) is said in the log. A file that does not parse
//! changes nothing, and says why.

use std::sync::Arc;

use loopsy_mesh::Mesh;
use tokio_util::sync::CancellationToken;

use crate::{
    Home, caps, config::Config, exec::policy::Policy as ExecPolicy, live::Live,
    transfer::policy::Policy as FilesPolicy, trust::Trust,
};

/// What a reload changes, and the config it compares against.
pub struct Reloader {
    pub home: Home,
    /// `config.toml` as last read (before this run's flags).
    pub on_disk: Config,
    pub trust: Arc<Trust>,
    pub exec: Live<ExecPolicy>,
    pub files: Live<FilesPolicy>,
    /// For the relays.
    pub mesh: Mesh,
    /// This run's relays came from `--relay`, which config.toml's do not replace.
    pub relays_from_flags: bool,
}

impl Reloader {
    /// Reloads on every SIGHUP until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGHUP: settings reload only on restart");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                hangup = hangups.recv() => {
                    if hangup.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading config.toml and trust.toml");
                    self.reload().await;
                }
            }
        }
    }

    /// Applies the home's files as they are now; logs each change.
    pub async fn reload(&mut self) {
        let path = self.home.config();
        let config = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| Config::parse(&text).map_err(|e| e.to_string()))
        {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(
                    path = %path.display(),
                    %error,
                    "not reloaded: the node keeps its settings; fix the file and send SIGHUP again"
                );
                return;
            }
        };
        let mut changes = Vec::new();
        if config.exec != self.on_disk.exec {
            self.exec.set(config.exec.clone());
            changes.push("exec policy (config.toml [exec])".to_owned());
        }
        if config.files != self.on_disk.files {
            self.files.set(config.files.clone());
            changes.push("file roots (config.toml [files])".to_owned());
        }
        // The defaults live in the trust store: they apply with it, or not at all.
        let defaults = caps::parse(&config.grants.allow).unwrap_or_default();
        match self.trust.reload(config.accept_introductions, defaults) {
            Ok(members) => {
                if config.grants != self.on_disk.grants {
                    changes.push(format!(
                        "default grants: [{}] (were [{}])",
                        config.grants.allow.join(","),
                        self.on_disk.grants.allow.join(",")
                    ));
                }
                if config.accept_introductions != self.on_disk.accept_introductions {
                    changes.push(format!(
                        "accept_introductions: {}",
                        config.accept_introductions
                    ));
                }
                changes.extend(members);
            }
            Err(error) => tracing::error!(
                %error,
                "trust.toml not reloaded, nor the default grants; fix it and send SIGHUP again"
            ),
        }
        if config.relays != self.on_disk.relays {
            if self.relays_from_flags {
                tracing::warn!("relays changed in config.toml; this run uses --relay's instead");
            } else if self.mesh.set_relays(config.relays.clone()).await.is_ok() {
                let relays: Vec<String> = config.relays.iter().map(ToString::to_string).collect();
                changes.push(format!("relays: [{}]", relays.join(", ")));
            }
        }
        let restart = [
            ("name", config.name != self.on_disk.name),
            ("listen", config.listen != self.on_disk.listen),
            ("mdns", config.mdns != self.on_disk.mdns),
            ("upnp", config.upnp != self.on_disk.upnp),
            ("natpmp", config.natpmp != self.on_disk.natpmp),
        ];
        for (setting, _) in restart.iter().filter(|(_, changed)| *changed) {
            tracing::warn!(
                setting,
                "changed in config.toml; takes effect at the next start"
            );
        }
        if changes.is_empty() {
            tracing::info!("reloaded: nothing that applies live changed");
        }
        for change in &changes {
            tracing::info!(change = %change, "reloaded");
        }
        self.on_disk = config;
    }
}
