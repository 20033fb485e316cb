//! `loopsy ctx`: the shared context, a key-value store every member holds a copy of. A
//! change is written here, signed, and pushed to the connected members, which pass it on.

use std::sync::Arc;

use loopsy_mesh::PeerId;
use loopsy_wire::{
    control::{self, CtxEntry, ErrorCode, Response},
    replica::Record,
};

use crate::{clock, replica::Store, sync, trust::Trust};

/// Longest TTL a key may be given: ten years.
const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

/// The shared context, as this device's user reads and writes it.
pub struct Ctx {
    store: Arc<Store>,
    pushes: sync::Pushes,
    trust: Arc<Trust>,
    /// This device's name, for the entries it wrote.
    name: String,
}

impl Ctx {
    pub fn new(store: Arc<Store>, pushes: sync::Pushes, trust: Arc<Trust>, name: String) -> Self {
        Self {
            store,
            pushes,
            trust,
            name,
        }
    }

    pub fn set(&self, key: &str, value: &str, ttl_secs: Option<u64>) -> Response {
        let expires = ttl_secs.map(|t| clock::now_ms() + t.clamp(1, MAX_TTL_SECS) * 1000);
        match self
            .store
            .put(key.as_bytes(), Some(value.as_bytes().to_vec()), expires)
        {
            Ok(record) => {
                self.pushes.push(sync::CTX, vec![record], None);
                self.get(key)
            }
            Err(e) => error(ErrorCode::InvalidArgument, e.to_string()),
        }
    }

    pub fn get(&self, key: &str) -> Response {
        match self.store.get(key.as_bytes()) {
            Some(record) => Response::Ctx {
                entries: self.entry(&record).into_iter().collect(),
            },
            None => error(ErrorCode::NotFound, format!("no context key `{key}`")),
        }
    }

    pub fn list(&self, prefix: &str) -> Response {
        let entries = self
            .store
            .live(prefix.as_bytes())
            .iter()
            .filter_map(|r| self.entry(r))
            .collect();
        Response::Ctx { entries }
    }

    pub fn remove(&self, key: &str) -> Response {
        if self.store.get(key.as_bytes()).is_none() {
            return error(ErrorCode::NotFound, format!("no context key `{key}`"));
        }
        match self.store.put(key.as_bytes(), None, None) {
            Ok(record) => {
                self.pushes.push(sync::CTX, vec![record], None);
                Response::Done {
                    message: format!("removed `{key}` on every device"),
                }
            }
            Err(e) => error(ErrorCode::InvalidArgument, e.to_string()),
        }
    }

    fn entry(&self, record: &Record) -> Option<CtxEntry> {
        let author = PeerId::from_bytes(&record.author).ok()?;
        let name = if author == self.trust.me() {
            self.name.clone()
        } else {
            self.trust.shown(&author)
        };
        Some(CtxEntry {
            key: String::from_utf8_lossy(&record.key).into_owned(),
            value: String::from_utf8_lossy(record.value.as_deref()?).into_owned(),
            author: name,
            author_peer_id: author.to_base58(),
            updated: clock::rfc3339_ms(record.clock.ms),
            expires: record.expires.map(clock::rfc3339_ms),
        })
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(control::Error::new(code, message))
}
