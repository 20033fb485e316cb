//! HTTPS and secure WebSocket (`/tls/ws`) on the web listener, with a certificate from any
//! CA (Let's Encrypt, say), so that a relay can be the app's HTTPS origin.
//!
//! libp2p's WebSocket transport can terminate TLS itself, but then the first bytes the
//! listener could read are already inside it, past the point where a page request is told
//! from an upgrade. So TLS ends here instead, below the sniffing: [`Secured`] hands a
//! `/tls/ws` (or `/wss`) listen address to the WebSocket transport as `/ws`, marks its port,
//! and puts the `/tls` back on every address the listener reports; each connection to a
//! marked port does the TLS handshake (see [`accept`](super::accept)) before its request
//! head is read. A port is either TLS or plain: a plain request on a TLS port fails its
//! handshake, as on any HTTPS server.
//!
//! Dialing is not touched: a `/tls/ws` dial goes to libp2p's WebSocket client, which checks
//! the server's certificate against the web's roots.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures_rustls::TlsAcceptor;
use libp2p::{
    Multiaddr,
    core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent},
    multiaddr::Protocol,
};
use rustls::{
    ServerConfig,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// A server certificate chain and its key, ready for handshakes.
#[derive(Clone)]
pub struct Certificate {
    pub(super) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificate")
    }
}

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate (PEM `BEGIN CERTIFICATE`)")]
    Empty(PathBuf),
    #[error("the certificate and key do not make a TLS server: {0}")]
    Invalid(#[from] rustls::Error),
}

impl Certificate {
    /// Reads a PEM certificate chain (the leaf first, as `fullchain.pem` has it) and its
    /// PEM private key.
    pub fn from_pem_files(chain: &Path, key: &Path) -> Result<Self, CertificateError> {
        let read = |path: &Path| {
            let path = path.to_owned();
            move |error| CertificateError::Read { path, error }
        };
        let certs = CertificateDer::pem_file_iter(chain)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(read(chain))?;
        if certs.is_empty() {
            return Err(CertificateError::Empty(chain.to_owned()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(read(key))?;
        Self::new(certs, key)
    }

    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertificateError> {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        // Pages and WebSockets both speak HTTP/1.1 here (a WebSocket upgrade needs it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// The TCP ports whose connections start with a TLS handshake, shared between
/// [`Secured`] (which learns them as listeners start) and the accepting side.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsPorts(Arc<Mutex<HashSet<u16>>>);

impl TlsPorts {
    pub(super) fn contains(&self, port: u16) -> bool {
        self.lock().contains(&port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        // The set is only ever inserted into and removed from: a panic elsewhere leaves
        // it whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A WebSocket transport whose `/tls/ws` listeners end TLS below it (see the module docs).
pub(super) struct Secured<T> {
    inner: T,
    /// Whether there is a certificate: without one, `/tls/ws` listen addresses are refused.
    tls: bool,
    ports: TlsPorts,
    /// The TLS listeners and the ports they were seen on.
    listeners: HashMap<ListenerId, HashSet<u16>>,
}

impl<T> Secured<T> {
    pub(super) fn new(inner: T, tls: bool, ports: TlsPorts) -> Self {
        Self {
            inner,
            tls,
            ports,
            listeners: HashMap::new(),
        }
    }

    /// `addr` as this listener really serves it: `/tls` put back before `/ws`.
    fn shown(&self, id: ListenerId, addr: Multiaddr) -> Multiaddr {
        if !self.listeners.contains_key(&id) {
            return addr;
        }
        let mut parts: Vec<Protocol<'_>> = addr.iter().collect();
        match parts.iter().position(|p| matches!(p, Protocol::Ws(_))) {
            Some(ws) => {
                parts.insert(ws, Protocol::Tls);
                parts.into_iter().collect()
            }
            None => addr.clone(),
        }
    }

    fn saw_port(&mut self, id: ListenerId, addr: &Multiaddr) {
        if let (Some(ports), Some(port)) = (self.listeners.get_mut(&id), tcp_port(addr)) {
            ports.insert(port);
            self.ports.lock().insert(port);
        }
    }

    fn closed(&mut self, id: ListenerId) {
        if let Some(ports) = self.listeners.remove(&id) {
            let still: HashSet<u16> = self.listeners.values().flatten().copied().collect();
            self.ports
                .lock()
                .retain(|p| !ports.contains(p) || still.contains(p));
        }
    }
}

/// `addr` without its TLS when it is a `/tls/ws` or `/wss` address; `None` otherwise.
fn without_tls(addr: &Multiaddr) -> Option<Multiaddr> {
    let mut parts: Vec<Protocol<'_>> = addr.iter().collect();
    let ws = parts
        .iter()
        .position(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)))?;
    match &parts[ws] {
        Protocol::Wss(path) => parts[ws] = Protocol::Ws(path.clone()),
        _ if ws > 0 && parts[ws - 1] == Protocol::Tls => {
            parts.remove(ws - 1);
        }
        _ => return None,
    }
    Some(parts.into_iter().collect())
}

pub(super) fn tcp_port(addr: &Multiaddr) -> Option<u16> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

impl<T: Transport + Unpin> Transport for Secured<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(plain) = without_tls(&addr) else {
            return self.inner.listen_on(id, addr);
        };
        if !self.tls {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.listen_on(id, plain.clone())?;
        self.listeners.insert(id, HashSet::new());
        if tcp_port(&plain).is_some_and(|p| p != 0) {
            self.saw_port(id, &plain);
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let event = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(match event {
            TransportEvent::NewAddress {
                listener_id,
                listen_addr,
            } => {
                this.saw_port(listener_id, &listen_addr);
                TransportEvent::NewAddress {
                    listener_id,
                    listen_addr: this.shown(listener_id, listen_addr),
                }
            }
            TransportEvent::AddressExpired {
                listener_id,
                listen_addr,
            } => TransportEvent::AddressExpired {
                listener_id,
                listen_addr: this.shown(listener_id, listen_addr),
            },
            TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr,
            } => TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr: this.shown(listener_id, local_addr),
                send_back_addr,
            },
            TransportEvent::ListenerClosed {
                listener_id,
                reason,
            } => {
                this.closed(listener_id);
                TransportEvent::ListenerClosed {
                    listener_id,
                    reason,
                }
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn tls_comes_off_a_secure_websocket_address_and_nothing_else() {
        assert_eq!(
            without_tls(&addr("/ip4/0.0.0.0/tcp/443/tls/ws")),
            Some(addr("/ip4/0.0.0.0/tcp/443/ws"))
        );
        assert_eq!(
            without_tls(&addr("/ip6/::/tcp/443/wss")),
            Some(addr("/ip6/::/tcp/443/ws"))
        );
        assert_eq!(without_tls(&addr("/ip4/0.0.0.0/tcp/80/ws")), None);
        assert_eq!(without_tls(&addr("/ip4/0.0.0.0/tcp/4001")), None);
        assert_eq!(without_tls(&addr("/ip4/0.0.0.0/tcp/4001/tls")), None);
    }

    #[test]
    fn a_tls_listeners_addresses_get_their_tls_back_and_others_stay() {
        let mut secured = Secured::new((), true, TlsPorts::default());
        let (tls, plain) = (ListenerId::next(), ListenerId::next());
        secured.listeners.insert(tls, HashSet::new());
        assert_eq!(
            secured.shown(tls, addr("/ip4/10.0.0.1/tcp/443/ws")),
            addr("/ip4/10.0.0.1/tcp/443/tls/ws")
        );
        assert_eq!(
            secured.shown(plain, addr("/ip4/10.0.0.1/tcp/80/ws")),
            addr("/ip4/10.0.0.1/tcp/80/ws")
        );
    }

    #[test]
    fn a_port_stays_tls_while_any_tls_listener_has_it() {
        let ports = TlsPorts::default();
        let mut secured = Secured::new((), true, ports.clone());
        let (v4, v6) = (ListenerId::next(), ListenerId::next());
        for id in [v4, v6] {
            secured.listeners.insert(id, HashSet::new());
        }
        secured.saw_port(v4, &addr("/ip4/10.0.0.1/tcp/443/ws"));
        secured.saw_port(v6, &addr("/ip6/::1/tcp/443/ws"));
        assert!(ports.contains(443));
        secured.closed(v4);
        assert!(ports.contains(443), "the IPv6 listener still has it");
        secured.closed(v6);
        assert!(!ports.contains(443));
    }
}
