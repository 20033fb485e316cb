//! Keeps the mesh together: dials members that are not connected (with backoff), runs
//! anti-entropy when a member connects and now and then, keeps this device's own member
//! record current, and cuts connections to devices that stop being members. It also tells
//! the mesh who the members are, so that its limits on strangers never shut them out.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use loopsy_mesh::{Mesh, MeshEvent, PeerId};
use tokio::{sync::broadcast::error::RecvError, task::JoinSet, time::Instant};

use crate::{
    addrs,
    audit::{Audit, Outcome},
    dial::{connected_members, why_unreachable},
    session::registry::Registry,
    sync::{self, Engine, Pushes},
    trust::Trust,
};

/// How often the keeper looks around.
const TICK: Duration = Duration::from_secs(5);
/// Ticks between full anti-entropy rounds.
const ROUND: u32 = 12;
/// How long a pairing takes to settle on both sides.
const SETTLE: Duration = Duration::from_secs(1);
/// How long a member that refused this device is first left alone: short, because a refusal
/// right after pairing only means the other side has not recorded the pairing yet.
const FIRST_SHUN: Duration = Duration::from_secs(10);
/// How long a member that keeps refusing this device (it revoked it) is left alone at most.
const SHUN: Duration = Duration::from_secs(600);
/// Longest wait between attempts to reach an unreachable member.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// What the keeper works with.
pub struct Keeper {
    pub mesh: Mesh,
    pub trust: Arc<Trust>,
    pub audit: Arc<Audit>,
    pub engine: Arc<Engine>,
    pub registry: Arc<Registry>,
    pub pushes: Pushes,
    /// This device's name, for its own member record.
    pub name: String,
}

impl Keeper {
    /// Keeps the mesh together until the mesh or the trust store stops; every dial and
    /// exchange it starts is its own, and ends with it.
    pub async fn run(self) {
        let keeper = &self;
        let mut tasks = JoinSet::new();
        let mut events = keeper.mesh.events();
        let mut changes = keeper.trust.subscribe();
        // Members and their names (kept to name them in the log once they are gone).
        let mut names = member_names(keeper);
        let mut members: BTreeSet<PeerId> = names.keys().copied().collect();
        tell_mesh(keeper, &members).await;
        // Members whose gate refused this device (it was revoked, or has not been paired back):
        // left alone for a while instead of redialled and refused again and again.
        let (refused_tx, mut refused) = tokio::sync::mpsc::channel::<PeerId>(64);
        let mut shunned = Shunned::default();
        let mut retry: HashMap<PeerId, (Instant, Duration)> = HashMap::new();
        // How each redial ended, and why each member that cannot be reached cannot.
        let (dialed_tx, mut dialed) = tokio::sync::mpsc::channel::<Dialed>(64);
        let mut unreachable = Unreachable::default();
        let mut tick = tokio::time::interval(TICK);
        let mut ticks: u32 = 0;
        loop {
            tokio::select! {
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                Some((peer, outcome)) = dialed.recv() => {
                    let next = retry.get(&peer).map(|(due, _)| due.saturating_duration_since(Instant::now()));
                    unreachable.dialled(&keeper.trust.shown(&peer), peer, outcome, next);
                }
                event = events.recv() => match event {
                    Ok(MeshEvent::Connected { peer }) if keeper.trust.is_member(&peer) => {
                        retry.remove(&peer);
                        unreachable.dialled(&keeper.trust.shown(&peer), peer, None, None);
                        if !shunned.now(&peer) {
                            reconcile(keeper, &mut tasks, peer, &refused_tx, Duration::ZERO);
                        }
                    }
                    // A member lost its last connection (it moved to another network,
                    // say): dialled again now, not at the next tick, then with backoff.
                    Ok(MeshEvent::Disconnected { peer }) if keeper.trust.is_member(&peer) => {
                        retry.insert(peer, (Instant::now(), TICK));
                        let wanted: BTreeSet<PeerId> = members
                            .iter()
                            .filter(|p| **p == peer && !shunned.now(p))
                            .copied()
                            .collect();
                        redial(keeper, &mut tasks, &wanted, &mut retry, &dialed_tx).await;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                Some(peer) = refused.recv() => {
                    tracing::info!(%peer, "refused by a member; leaving it alone for a while");
                    shunned.refused(peer);
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now_names = member_names(keeper);
                    let now: BTreeSet<PeerId> = now_names.keys().copied().collect();
                    if now != members {
                        tell_mesh(keeper, &now).await;
                    }
                    for gone in members.difference(&now) {
                        tracing::info!(peer = %gone, "no longer a member: closing its connections");
                        shunned.forget(gone);
                        let mesh = keeper.mesh.clone();
                        let gone = *gone;
                        tasks.spawn(async move {
                            let _ = mesh.disconnect(gone).await;
                        });
                        keeper.audit.record(
                            Some(gone),
                            names.get(&gone).cloned(),
                            "member removed",
                            "",
                            Outcome::Ok,
                            Some("revoked".into()),
                        );
                    }
                    let connected = connected_members(&keeper.mesh, &keeper.trust).await;
                    for new in now.difference(&members) {
                        // Paired (again): whatever it refused before no longer holds.
                        shunned.forget(new);
                        if connected.contains(new) {
                            // Just paired: give the other side a moment to record the pairing
                            // too, or its gate would refuse this exchange.
                            reconcile(keeper, &mut tasks, *new, &refused_tx, SETTLE);
                        } else {
                            retry.insert(*new, (Instant::now(), TICK));
                        }
                    }
                    members = now;
                    names = now_names;
                }
                _ = tick.tick() => {
                    describe_self(keeper).await;
                    // Sessions that ended, or whose clients or activity changed.
                    keeper.registry.publish_soon();
                    if ticks.is_multiple_of(ROUND) {
                        for peer in connected_members(&keeper.mesh, &keeper.trust).await {
                            if !shunned.now(&peer) {
                                reconcile(keeper, &mut tasks, peer, &refused_tx, Duration::ZERO);
                            }
                        }
                    }
                    ticks = ticks.wrapping_add(1);
                    let wanted: BTreeSet<PeerId> =
                        members.iter().filter(|p| !shunned.now(p)).copied().collect();
                    retry.retain(|peer, _| wanted.contains(peer));
                    redial(keeper, &mut tasks, &wanted, &mut retry, &dialed_tx).await;
                    unreachable.forget_all_but(&members);
                }
            }
        }
    }
}

/// Members whose gate refused this device, left alone for a while instead of redialled and
/// refused again and again: 10 s after the first refusal, twice as long after each next one,
/// up to ten minutes.
#[derive(Debug, Default)]
struct Shunned(HashMap<PeerId, (Instant, Duration)>);

impl Shunned {
    fn refused(&mut self, peer: PeerId) {
        self.refused_at(peer, Instant::now());
    }

    fn refused_at(&mut self, peer: PeerId, at: Instant) {
        let (until, length) = self.0.entry(peer).or_insert((at, Duration::ZERO));
        *length = (*length * 2).clamp(FIRST_SHUN, SHUN);
        *until = at + *length;
    }

    /// Whether `peer` is left alone now.
    fn now(&self, peer: &PeerId) -> bool {
        self.at(peer, Instant::now())
    }

    fn at(&self, peer: &PeerId, at: Instant) -> bool {
        self.0.get(peer).is_some_and(|(until, _)| *until > at)
    }

    fn forget(&mut self, peer: &PeerId) {
        self.0.remove(peer);
    }
}

/// How a dial of a member ended: `None` when connected, else the mesh's reason why not.
type Dialed = (PeerId, Option<String>);

/// Why each member that cannot be reached cannot, as last logged: a reason is logged when
/// it changes (and when the member is reachable again), not on every retry.
#[derive(Debug, Default)]
struct Unreachable(HashMap<PeerId, String>);

impl Unreachable {
    /// Takes how a dial of `peer` (called `name`) ended, retried after `next`.
    fn dialled(
        &mut self,
        name: &str,
        peer: PeerId,
        failure: Option<String>,
        next: Option<Duration>,
    ) -> Option<String> {
        let said = match failure {
            None => self
                .0
                .remove(&peer)
                .map(|_| format!("{name} is reachable again")),
            Some(error) => {
                let why = why_unreachable(&error);
                let again = self.0.get(&peer) == Some(&why);
                self.0.insert(peer, why.clone());
                let next = next
                    .map(|n| format!("; next try in {} s", n.as_secs().max(1)))
                    .unwrap_or_default();
                (!again).then(|| format!("{name} unreachable: {why}{next}"))
            }
        };
        if let Some(said) = &said {
            tracing::info!(%peer, "{said}");
        }
        said
    }

    /// Forgets devices that are no longer members.
    fn forget_all_but(&mut self, members: &BTreeSet<PeerId>) {
        self.0.retain(|peer, _| members.contains(peer));
    }
}

/// Tells the mesh who the members are: they get in past its limits on strangers.
async fn tell_mesh(keeper: &Keeper, members: &BTreeSet<PeerId>) {
    let _ = keeper
        .mesh
        .set_members(members.iter().copied().collect())
        .await;
}

fn member_names(keeper: &Keeper) -> HashMap<PeerId, String> {
    keeper
        .trust
        .list()
        .into_iter()
        .map(|l| (l.member.peer_id, l.member.name))
        .collect()
}

/// Runs anti-entropy with `peer` after `delay`, reporting a refusal by its gate.
fn reconcile(
    keeper: &Keeper,
    tasks: &mut JoinSet<()>,
    peer: PeerId,
    refused: &tokio::sync::mpsc::Sender<PeerId>,
    delay: Duration,
) {
    let (engine, mesh) = (keeper.engine.clone(), keeper.mesh.clone());
    let refused = refused.clone();
    tasks.spawn(async move {
        tokio::time::sleep(delay).await;
        match engine.reconcile(&mesh, peer).await {
            Ok(()) => {}
            Err(sync::SyncError::Refused(reason)) => {
                tracing::debug!(%peer, %reason, "anti-entropy refused");
                let _ = refused.try_send(peer);
            }
            Err(error) => tracing::debug!(%peer, %error, "anti-entropy failed"),
        }
    });
}

/// Dials those of `members` that are not connected and whose backoff has passed.
async fn redial(
    keeper: &Keeper,
    tasks: &mut JoinSet<()>,
    members: &BTreeSet<PeerId>,
    retry: &mut HashMap<PeerId, (Instant, Duration)>,
    dialed: &tokio::sync::mpsc::Sender<Dialed>,
) {
    let seen = keeper.mesh.peers().await.unwrap_or_default();
    let connected: BTreeSet<PeerId> = seen
        .iter()
        .filter(|p| p.is_connected() && members.contains(&p.peer_id))
        .map(|p| p.peer_id)
        .collect();
    let now = Instant::now();
    retry.retain(|peer, _| !connected.contains(peer));
    for peer in members.difference(&connected) {
        let (due, delay) = retry.entry(*peer).or_insert((now, TICK));
        if *due > now {
            continue;
        }
        *due = now + *delay;
        *delay = (*delay * 2).min(MAX_BACKOFF);
        // What the member records say, then what this node saw itself (identify, mDNS).
        let mut addrs = keeper
            .trust
            .member(peer)
            .map(|m| m.addrs)
            .unwrap_or_default();
        if let Some(seen) = seen.iter().find(|p| p.peer_id == *peer) {
            let more: Vec<_> = seen
                .addrs
                .iter()
                .filter(|a| !addrs.contains(a))
                .cloned()
                .collect();
            addrs.extend(more);
        }
        let mesh = keeper.mesh.clone();
        let peer = *peer;
        tracing::debug!(%peer, "dialling a member");
        let dialed = dialed.clone();
        tasks.spawn(async move {
            let outcome = mesh.connect(peer, addrs).await;
            tracing::debug!(%peer, ?outcome, "dial of a member ended");
            if let Ok(outcome) = outcome {
                let _ = dialed.try_send((peer, outcome.err()));
            }
        });
    }
}

/// Publishes this device's name and addresses when they changed (never an empty list,
/// as while the node is still starting to listen).
async fn describe_self(keeper: &Keeper) {
    let addrs = addrs::advertised(&keeper.mesh).await;
    if addrs.is_empty() {
        return;
    }
    match keeper.trust.describe_self(&keeper.name, &addrs) {
        Ok(Some(record)) => keeper.pushes.members(&[record], None),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot update this device's member record"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str = "Failed to negotiate transport protocol(s): [(/ip4/192.0.2.7/tcp/7717/p2p/12D3KooWQVMzxLeujssVnLhrU26J5Ud7jbDLoLZUkwxuYddFcWwq: : Connection refused (os error 111))]";

    #[test]
    fn a_member_that_refused_once_is_tried_again_soon_and_one_that_keeps_refusing_later() {
        let mut shunned = Shunned::default();
        let bravo = PeerId::random();
        let start = Instant::now();
        assert!(!shunned.at(&bravo, start));
        // Refused right after pairing (the other side had not recorded it yet): 10 s.
        shunned.refused_at(bravo, start);
        assert!(shunned.at(&bravo, start + Duration::from_secs(9)));
        assert!(!shunned.at(&bravo, start + Duration::from_secs(11)));
        let mut at = start + Duration::from_secs(11);
        let mut lengths = Vec::new();
        for _ in 0..8 {
            shunned.refused_at(bravo, at);
            let (until, _) = shunned.0[&bravo];
            lengths.push((until - at).as_secs());
            at = until;
        }
        assert_eq!(lengths, [20, 40, 80, 160, 320, 600, 600, 600]);
        shunned.forget(&bravo);
        assert!(
            !shunned.at(&bravo, at - Duration::from_secs(1)),
            "paired again"
        );
    }

    #[test]
    fn why_a_member_cannot_be_reached_is_said_once_per_change() {
        let mut unreachable = Unreachable::default();
        let bravo = PeerId::random();
        let in_30 = Some(Duration::from_secs(30));
        let said = unreachable.dialled("bravo", bravo, Some(REFUSED.into()), in_30);
        assert_eq!(
            said.as_deref(),
            Some(
                "bravo unreachable: connection refused at /ip4/192.0.2.7/tcp/7717; next try in 30 s"
            )
        );
        let in_60 = Some(Duration::from_secs(60));
        assert_eq!(
            unreachable.dialled("bravo", bravo, Some(REFUSED.into()), in_60),
            None,
            "not every retry"
        );
        let other = "Failed to negotiate transport protocol(s): [(/ip4/198.51.100.1/tcp/7717: : No route to host (os error 113))]";
        let said = unreachable.dialled("bravo", bravo, Some(other.into()), in_60);
        assert_eq!(
            said.as_deref(),
            Some(
                "bravo unreachable: no route to host at /ip4/198.51.100.1/tcp/7717; next try in 60 s"
            ),
            "a new reason is said"
        );
        let said = unreachable.dialled("bravo", bravo, None, None);
        assert_eq!(said.as_deref(), Some("bravo is reachable again"));
        assert_eq!(unreachable.dialled("bravo", bravo, None, None), None);
    }
}
