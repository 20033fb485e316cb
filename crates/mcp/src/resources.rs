//! Peers and sessions as MCP resources, for clients that show or attach them as context.

use std::time::Duration;

use rmcp::{
    ErrorData,
    model::{ListResourcesResult, ReadResourceResult, Resource, ResourceContents},
};

use crate::{
    Loopsy,
    node::{self, Watch},
    tools::{Peer, screen, within_budget},
};

const PEERS: &str = "loopsy://peers";
const SESSIONS: &str = "loopsy://sessions";
/// Sessions listed one by one, beyond which only the list resource has them.
const MAX_LISTED: usize = 200;

pub async fn list(server: &Loopsy) -> Result<ListResourcesResult, ErrorData> {
    let mut resources = vec![
        Resource::new(PEERS, "peers")
            .with_description("The devices this one knows, with whether each is online.")
            .with_mime_type("application/json"),
        Resource::new(SESSIONS, "sessions")
            .with_description("Every terminal session in the mesh.")
            .with_mime_type("application/json"),
    ];
    let sessions = server.session_entries().await.map_err(unavailable)?;
    for s in sessions
        .iter()
        .filter(|s| s.status == "running")
        .take(MAX_LISTED)
    {
        let label = s.name.as_deref().unwrap_or(&s.id);
        resources.push(
            Resource::new(
                format!("{SESSIONS}/{}/{}", s.host_peer_id, s.id),
                format!("session {label} on {}", s.host),
            )
            .with_description(format!(
                "The screen of `{}`, as text.",
                short(&s.command.join(" "))
            ))
            .with_mime_type("text/plain"),
        );
    }
    Ok(ListResourcesResult::with_all_items(resources))
}

pub async fn read(server: &Loopsy, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let json = |value: serde_json::Value| {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        ResourceContents::TextResourceContents {
            uri: uri.to_owned(),
            mime_type: Some("application/json".into()),
            text,
            meta: None,
        }
    };
    let contents = if uri == PEERS {
        let peers: Vec<Peer> = server
            .peer_list()
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(Peer::from)
            .collect();
        let (peers, truncated) = within_budget(peers);
        json(serde_json::json!({ "peers": peers, "truncated": truncated }))
    } else if uri == SESSIONS {
        let sessions = server.session_entries().await.map_err(unavailable)?;
        let (sessions, truncated) = within_budget(sessions);
        json(serde_json::json!({ "sessions": sessions, "truncated": truncated }))
    } else if let Some((host, id)) = uri
        .strip_prefix(SESSIONS)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split_once('/'))
    {
        let watch = Watch {
            quiet: Duration::ZERO,
            most: Duration::ZERO,
        };
        let look = node::look(
            &server.client,
            Some(host.into()),
            id.into(),
            Vec::new(),
            watch,
        )
        .await
        .map_err(|e| ErrorData::resource_not_found(e, None))?;
        ResourceContents::text(screen(look).text, uri)
    } else {
        return Err(ErrorData::resource_not_found(
            format!("no resource {uri}: try {PEERS} or {SESSIONS}"),
            None,
        ));
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// At most 80 characters of `text`.
fn short(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn unavailable(message: String) -> ErrorData {
    ErrorData::internal_error(message, None)
}
