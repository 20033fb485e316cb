//! `loopsy ctx`: the shared context, a key-value store every member holds a copy of. A
//! change is written here, signed, and pushed to the connected members, which pass it on.

use std::sync::Arc;

use loopsy_mesh::PeerId;
use loopsy_wire::{
    control::{self, CtxEntry, ErrorCode, Response},
    replica::Record,
};

use super::Node;
use crate::{clock, sync};

/// Longest TTL a key may be given: ten years.
const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

pub(super) fn set(node: &Arc<Node>, key: &str, value: &str, ttl_secs: Option<u64>) -> Response {
    let expires = ttl_secs.map(|t| clock::now_ms() + t.clamp(1, MAX_TTL_SECS) * 1000);
    match node
        .ctx
        .put(key.as_bytes(), Some(value.as_bytes().to_vec()), expires)
    {
        Ok(record) => {
            sync::push(node, sync::CTX, vec![record], None);
            get(node, key)
        }
        Err(e) => error(ErrorCode::InvalidArgument, e.to_string()),
    }
}

pub(super) fn get(node: &Node, key: &str) -> Response {
    match node.ctx.get(key.as_bytes()) {
        Some(record) => Response::Ctx {
            entries: entry(node, &record).into_iter().collect(),
        },
        None => error(ErrorCode::NotFound, format!("no context key `{key}`")),
    }
}

pub(super) fn list(node: &Node, prefix: &str) -> Response {
    let entries = node
        .ctx
        .live(prefix.as_bytes())
        .iter()
        .filter_map(|r| entry(node, r))
        .collect();
    Response::Ctx { entries }
}

pub(super) fn remove(node: &Arc<Node>, key: &str) -> Response {
    if node.ctx.get(key.as_bytes()).is_none() {
        return error(ErrorCode::NotFound, format!("no context key `{key}`"));
    }
    match node.ctx.put(key.as_bytes(), None, None) {
        Ok(record) => {
            sync::push(node, sync::CTX, vec![record], None);
            Response::Done {
                message: format!("removed `{key}` on every device"),
            }
        }
        Err(e) => error(ErrorCode::InvalidArgument, e.to_string()),
    }
}

fn entry(node: &Node, record: &Record) -> Option<CtxEntry> {
    let author = PeerId::from_bytes(&record.author).ok()?;
    let name = if author == node.mesh.peer_id() {
        node.name.clone()
    } else {
        node.peer_name(&author)
            .unwrap_or_else(|| author.to_base58())
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

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(control::Error::new(code, message))
}
