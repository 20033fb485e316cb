//! Requests whose answer is a series of control frames: a copy's progress and result, the
//! audit log (followed or not), a pairing invitation and the devices that use it.

use loopsy_wire::control::{
    AuditEntry, Copied, CopiedFile, Copy, CopyProgress, Invitation, MeshEvent, Paired, Request,
    Response,
};

use crate::{Client, Connection, Error};

/// A copy under way; dropping it stops the copy (what arrived stays, for a resume).
pub struct CopyRun(Connection);

/// What a copy reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyEvent {
    Progress(CopyProgress),
    /// Files of the finished copy, a few at a time, before [`CopyEvent::Done`].
    Files(Vec<CopiedFile>),
    /// The totals: the last event.
    Done(Copied),
}

impl CopyRun {
    /// The next report; after [`CopyEvent::Done`] there are none.
    pub async fn next(&mut self) -> Result<CopyEvent, Error> {
        match self.0.next().await? {
            Some(Response::CopyProgress(now)) => Ok(CopyEvent::Progress(now)),
            Some(Response::CopiedFiles { files }) => Ok(CopyEvent::Files(files)),
            Some(Response::Copied(totals)) => Ok(CopyEvent::Done(totals)),
            Some(_) => Err(Error::Unexpected { wanted: "a copy" }),
            None => Err(Error::Unfinished("copy")),
        }
    }
}

/// The audit log as it comes.
pub struct AuditFeed(Connection);

impl AuditFeed {
    /// The next entries; `None` at the end of the log (never, when followed).
    pub async fn next(&mut self) -> Result<Option<Vec<AuditEntry>>, Error> {
        match self.0.next().await? {
            Some(Response::Audit { entries }) => Ok(Some(entries)),
            Some(_) => Err(Error::Unexpected {
                wanted: "audit entries",
            }),
            None => Ok(None),
        }
    }
}

/// The mesh's attention events as they come.
pub struct EventFeed(Connection);

impl EventFeed {
    /// The next events; `None` at the end (after the past ones, when not followed).
    pub async fn next(&mut self) -> Result<Option<Vec<MeshEvent>>, Error> {
        match self.0.next().await? {
            Some(Response::Events { events }) => Ok(Some(events)),
            Some(_) => Err(Error::Unexpected {
                wanted: "attention events",
            }),
            None => Ok(None),
        }
    }
}

/// A pairing code waiting for devices; dropping it withdraws the code at the node.
pub struct Invite {
    connection: Connection,
    pub invitation: Invitation,
}

/// What a waiting invitation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteEvent {
    /// A device paired.
    Paired(Paired),
    /// The short code was tried wrongly too often and withdrawn; the long code still works.
    ShortCodeWithdrawn { message: String },
}

impl Invite {
    /// The next device that paired, or news of the short code; `None` when the invitation
    /// is used up. An expired code is [`Error::Refused`] with `expired`.
    pub async fn next(&mut self) -> Result<Option<InviteEvent>, Error> {
        match self.connection.next().await? {
            Some(Response::Paired(paired)) => Ok(Some(InviteEvent::Paired(paired))),
            Some(Response::ShortCodeWithdrawn { message }) => {
                Ok(Some(InviteEvent::ShortCodeWithdrawn { message }))
            }
            Some(_) => Err(Error::Unexpected {
                wanted: "a pairing",
            }),
            None => Ok(None),
        }
    }
}

impl Client {
    /// Starts a copy between this device and a peer.
    pub async fn copy(&self, copy: Copy) -> Result<CopyRun, Error> {
        Ok(CopyRun(Connection::open(self, Request::Copy(copy)).await?))
    }

    /// The audit log from `since` (RFC 3339) on; with `follow`, new entries as they come.
    pub async fn audit(&self, follow: bool, since: Option<String>) -> Result<AuditFeed, Error> {
        let request = Request::Audit { follow, since };
        Ok(AuditFeed(Connection::open(self, request).await?))
    }

    /// The mesh's attention events from `since_ms` (milliseconds since the epoch; none of
    /// the past without it); with `follow`, new ones as they arrive.
    pub async fn events(&self, follow: bool, since_ms: Option<u64>) -> Result<EventFeed, Error> {
        let request = Request::Events { follow, since_ms };
        Ok(EventFeed(Connection::open(self, request).await?))
    }

    /// Makes a pairing code for `ttl_secs`, granting `allow` (the defaults when `None`).
    pub async fn pair_invite(
        &self,
        ttl_secs: u64,
        allow: Option<Vec<String>>,
        multi: bool,
    ) -> Result<Invite, Error> {
        let request = Request::PairInvite {
            ttl_secs,
            allow,
            multi,
        };
        let mut connection = Connection::open(self, request).await?;
        match connection.answer().await? {
            Response::Invitation(invitation) => Ok(Invite {
                connection,
                invitation,
            }),
            _ => Err(Error::Unexpected {
                wanted: "a pairing code",
            }),
        }
    }
}
