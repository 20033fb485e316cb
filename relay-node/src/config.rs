//! The relay's settings file (TOML): limits on what it relays, and who may use it.
//!
//! ```toml
//! [limits]
//! reservations = 1024          # devices reachable through the relay at once
//! reservations_per_peer = 4
//! reservation_secs = 3600      # a device renews its reservation before this runs out
//! circuits = 256               # relayed connections at once
//! circuits_per_peer = 16
//! circuit_secs = 86400         # a relayed connection is cut after this long...
//! circuit_bytes = 0            # ...or after this many bytes each way (0: no limit)
//!
//! # Token buckets against floods: each holds `burst` requests, and one more comes back
//! # every `every_secs` (renewals count). Per device (peer ID) and per IP address.
//! [limits.rate]
//! reservations_per_peer = { burst = 30, every_secs = 120 }
//! reservations_per_ip = { burst = 60, every_secs = 60 }
//! circuits_per_peer = { burst = 30, every_secs = 120 }
//! circuits_per_ip = { burst = 60, every_secs = 60 }
//!
//! [access]
//! allow = ["12D3KooW..."]      # when given, only these devices may connect at all
//!
//! [metrics]
//! listen = "127.0.0.1:9464"    # Prometheus text at /metrics; off when not given
//! ```

use std::{net::SocketAddr, num::NonZeroU32, path::Path, time::Duration};

use libp2p::{PeerId, relay};
use serde::Deserialize;

/// What the settings file holds; everything has a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub metrics: Metrics,
}

/// How much the relay carries. The defaults suit Loopsy's fallback traffic (terminal
/// sessions that stay attached for hours, copies between devices no punch could join),
/// where libp2p's own (2 minutes, 128 KiB per circuit) suit only a hole-punching handshake.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub reservations: usize,
    pub reservations_per_peer: usize,
    pub reservation_secs: u64,
    pub circuits: usize,
    pub circuits_per_peer: usize,
    pub circuit_secs: u64,
    /// 0: no limit.
    pub circuit_bytes: u64,
    pub rate: Rates,
}

/// How fast one device or one IP address may ask for reservations and circuits. The
/// defaults are libp2p's: a device renews its reservation well within them, a flood does not.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rates {
    pub reservations_per_peer: Rate,
    pub reservations_per_ip: Rate,
    pub circuits_per_peer: Rate,
    pub circuits_per_ip: Rate,
}

impl Default for Rates {
    fn default() -> Self {
        let per_peer = Rate {
            burst: 30,
            every_secs: 120,
        };
        let per_ip = Rate {
            burst: 60,
            every_secs: 60,
        };
        Self {
            reservations_per_peer: per_peer,
            reservations_per_ip: per_ip,
            circuits_per_peer: per_peer,
            circuits_per_ip: per_ip,
        }
    }
}

/// A token bucket: `burst` requests at once, then one more every `every_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    pub every_secs: u64,
}

impl Rate {
    /// As libp2p's rate limiter takes it (`parse` has refused zeroes).
    fn bucket(self) -> (NonZeroU32, Duration) {
        (
            NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN),
            Duration::from_secs(self.every_secs.max(1)),
        )
    }
}

/// The operator's metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where to serve Prometheus text at `/metrics`; off when `None`.
    pub listen: Option<SocketAddr>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            reservations: 1024,
            reservations_per_peer: 4,
            reservation_secs: 3600,
            circuits: 256,
            circuits_per_peer: 16,
            circuit_secs: 24 * 3600,
            circuit_bytes: 0,
            rate: Rates::default(),
        }
    }
}

/// Who may use the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Peer IDs; when given, a private relay: no one else may connect.
    pub allow: Option<Vec<String>>,
}

/// The settings file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid relay config: {reason}")]
    Invalid { path: String, reason: String },
}

impl Settings {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| SettingsError::Invalid {
            path: shown,
            reason,
        })
    }

    /// Parses and checks settings text.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The whole error: its excerpt of the file shows the key with the bad value.
        let settings: Self = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        settings.allowed()?;
        let rates = &settings.limits.rate;
        for (key, rate) in [
            ("reservations_per_peer", rates.reservations_per_peer),
            ("reservations_per_ip", rates.reservations_per_ip),
            ("circuits_per_peer", rates.circuits_per_peer),
            ("circuits_per_ip", rates.circuits_per_ip),
        ] {
            if rate.burst == 0 {
                return Err(format!("limits.rate.{key}.burst must be at least 1"));
            }
            // A day at most: a bucket that never refills is a ban, which `access` says better.
            if rate.every_secs == 0 || rate.every_secs > 86400 {
                return Err(format!(
                    "limits.rate.{key}.every_secs must be between 1 and 86400"
                ));
            }
        }
        // The relay protocol carries a circuit's duration in 32-bit seconds.
        if settings.limits.circuit_secs == 0 || settings.limits.circuit_secs > u64::from(u32::MAX) {
            return Err("limits.circuit_secs must be between 1 and 4294967295".into());
        }
        if settings.limits.reservation_secs == 0 {
            return Err("limits.reservation_secs must be at least 1".into());
        }
        Ok(settings)
    }

    /// The allowlist as peer IDs; `None` for an open relay.
    pub fn allowed(&self) -> Result<Option<Vec<PeerId>>, String> {
        let Some(allow) = &self.access.allow else {
            return Ok(None);
        };
        allow
            .iter()
            .map(|id| {
                id.parse::<PeerId>()
                    .map_err(|_| format!("access.allow: {id:?} is not a peer ID"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The limits as libp2p's relay takes them.
    pub fn relay_config(&self) -> relay::Config {
        let l = &self.limits;
        let config = relay::Config {
            max_reservations: l.reservations,
            max_reservations_per_peer: l.reservations_per_peer,
            reservation_duration: Duration::from_secs(l.reservation_secs),
            max_circuits: l.circuits,
            max_circuits_per_peer: l.circuits_per_peer,
            max_circuit_duration: Duration::from_secs(l.circuit_secs),
            max_circuit_bytes: l.circuit_bytes,
            reservation_rate_limiters: Vec::new(),
            circuit_src_rate_limiters: Vec::new(),
        };
        let rates = &l.rate;
        let (burst, every) = rates.reservations_per_peer.bucket();
        let config = config.reservation_rate_per_peer(burst, every);
        let (burst, every) = rates.reservations_per_ip.bucket();
        let config = config.reservation_rate_per_ip(burst, every);
        let (burst, every) = rates.circuits_per_peer.bucket();
        let config = config.circuit_src_per_peer(burst, every);
        let (burst, every) = rates.circuits_per_ip.bucket();
        config.circuit_src_per_ip(burst, every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text is settings or an error: never a panic.
        #[test]
        fn any_text_parses_or_says_why(text in "[a-z_\\[\\]=\"0-9 \n]{0,200}") {
            let _ = Settings::parse(&text);
        }
    }

    #[test]
    fn defaults_fit_long_sessions_and_fields_override_them() {
        let settings = Settings::parse("").expect("empty is fine");
        assert_eq!(settings.limits, Limits::default());
        let relay = settings.relay_config();
        assert_eq!(relay.max_circuit_duration, Duration::from_secs(86400));
        assert_eq!(relay.max_circuit_bytes, 0);
        let settings =
            Settings::parse("[limits]\ncircuit_secs = 60\ncircuit_bytes = 1024\n").expect("parses");
        assert_eq!(settings.limits.circuit_secs, 60);
        assert_eq!(settings.limits.circuits, Limits::default().circuits);
        assert_eq!(settings.relay_config().max_circuit_bytes, 1024);
        let settings =
            Settings::parse("[limits.rate]\ncircuits_per_ip = { burst = 5, every_secs = 9 }\n")
                .expect("parses");
        let rate = &settings.limits.rate;
        assert_eq!(
            rate.circuits_per_ip,
            Rate {
                burst: 5,
                every_secs: 9
            }
        );
        assert_eq!(rate.circuits_per_peer, Rates::default().circuits_per_peer);
        let relay = settings.relay_config();
        assert_eq!(relay.reservation_rate_limiters.len(), 2);
        assert_eq!(relay.circuit_src_rate_limiters.len(), 2);
    }

    #[test]
    fn bad_settings_are_named() {
        let id = PeerId::random().to_base58();
        let ok = Settings::parse(&format!("[access]\nallow = [\"{id}\"]\n")).expect("parses");
        assert_eq!(ok.allowed(), Ok(Some(vec![id.parse().expect("id")])));
        for (text, says) in [
            ("[access]\nallow = [\"nope\"]\n", "not a peer ID"),
            ("[limits]\ncircuit_secs = 0\n", "circuit_secs"),
            ("[limits]\ncircuit_secs = 99999999999\n", "circuit_secs"),
            ("[limits]\nbogus = 1\n", "bogus"),
            (
                "[limits.rate]\ncircuits_per_ip = { burst = 0, every_secs = 1 }\n",
                "limits.rate.circuits_per_ip.burst",
            ),
            (
                "[limits.rate]\nreservations_per_peer = { burst = 1, every_secs = 0 }\n",
                "limits.rate.reservations_per_peer.every_secs",
            ),
            (
                "[limits.rate]\ncircuits_per_ip = { burst = 1 }\n",
                "circuits_per_ip",
            ),
            ("[limits]\ncircuits = \"many\"\n", "circuits"),
            ("[metrics]\nlisten = \"nowhere\"\n", "listen"),
        ] {
            let error = Settings::parse(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
