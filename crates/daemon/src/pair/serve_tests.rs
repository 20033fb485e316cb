//! Pairing's two sides over an in-memory stream: the joiner's handshake against the
//! inviter's serving side, by long code and by short code, and what the inviter says to a
//! joiner it refuses.

use std::sync::Arc;

use libp2p::identity::Keypair;
use loopsy_mesh::{Multiaddr, PeerId, framed};
use loopsy_wire::{
    control::Paired,
    pair::{Code, Kind, MAX_FRAME, Message, ShortCode},
};

use super::{JoinError, Pairing};
use crate::{
    audit::Audit,
    caps, clock,
    sync::pushes,
    testing::{self, Pipe},
    trust::Trust,
};

struct Device {
    id: PeerId,
    pairing: Pairing,
    trust: Arc<Trust>,
    audit: Arc<Audit>,
}

fn device(dir: &std::path::Path, name: &str) -> Device {
    let keypair = Keypair::generate_ed25519();
    let id = keypair.public().to_peer_id();
    let defaults = caps::parse(&["ctx".to_owned()]).unwrap();
    let trust = Arc::new(
        Trust::load(
            dir.join(format!("{name}.toml")),
            keypair,
            true,
            defaults.clone(),
        )
        .unwrap(),
    );
    let audit = Arc::new(Audit::new(dir.join(format!("{name}.log"))));
    let addr: Multiaddr = "/ip4/192.0.2.7/tcp/7717".parse().unwrap();
    let (pushes, _) = pushes();
    let pairing = Pairing::new(
        name.to_owned(),
        defaults,
        trust.clone(),
        audit.clone(),
        pushes,
        Arc::new(vec![addr]),
    );
    Device {
        id,
        pairing,
        trust,
        audit,
    }
}

/// A code for an invitation of `inviter`'s that grants `allow`.
fn invite(
    inviter: &Device,
    allow: &[&str],
) -> (Code, tokio::sync::mpsc::Receiver<Paired>, impl Drop) {
    let allow: Vec<String> = allow.iter().map(|a| a.to_string()).collect();
    let expires = clock::now_secs() + 60;
    let (claim, events, withdraw) = inviter
        .pairing
        .invitations()
        .open(expires, Some(caps::parse(&allow).unwrap()), false)
        .unwrap();
    let code = Code {
        inviter: inviter.id.to_bytes(),
        addrs: Vec::new(),
        invite: claim.id,
        secret: claim.secret,
        expires,
    };
    (code, events, withdraw)
}

/// The inviter's side of one pairing stream, from its first message on.
async fn serve(inviter: &Device, joiner: PeerId, mut stream: Pipe) {
    let start = framed::read(&mut stream, MAX_FRAME).await;
    inviter.pairing.answer(joiner, &mut stream, start).await;
}

/// `joiner` uses the long `code` on `inviter`; how it went, as the joiner sees it.
async fn join(joiner: &Device, inviter: &Device, code: &Code) -> Result<Paired, JoinError> {
    let (mut joining, inviting) = testing::pipe();
    let (joined, ()) = tokio::join!(
        joiner
            .pairing
            .handshake_as_joiner(&mut joining, inviter.id, code, None),
        serve(inviter, joiner.id, inviting),
    );
    joined
}

/// `joiner` uses the short `code` on `inviter`, which sees the stream come from `seen_as`.
async fn join_short(
    joiner: &Device,
    inviter: &Device,
    seen_as: PeerId,
    code: &ShortCode,
) -> Result<Paired, JoinError> {
    let (mut joining, inviting) = testing::pipe();
    let (joined, ()) = tokio::join!(
        joiner
            .pairing
            .short_handshake_as_joiner(&mut joining, inviter.id, code, None),
        serve(inviter, seen_as, inviting),
    );
    joined
}

/// What `inviter` answers `stranger`'s stream that starts with `first`.
async fn answer_to(
    inviter: &Device,
    stranger: PeerId,
    first: &Message,
) -> Result<Option<Message>, framed::ReadError> {
    let (mut joining, inviting) = testing::pipe();
    framed::write(&mut joining, first, MAX_FRAME).await.unwrap();
    let ((), reply) = tokio::join!(
        serve(inviter, stranger, inviting),
        framed::read::<Message, _>(&mut joining, MAX_FRAME),
    );
    reply
}

#[tokio::test]
async fn a_joiner_with_the_code_and_its_inviter_trust_each_other() {
    let dir = testing::scratch("pair-ok");
    let (alpha, bravo) = (device(&dir, "alpha"), device(&dir, "bravo"));
    let (code, mut events, _withdraw) = invite(&alpha, &["exec"]);
    let joined = join(&bravo, &alpha, &code).await.expect("paired");
    let told = events.try_recv().expect("the inviter's user is told");
    assert_eq!(
        joined.check_code, told.check_code,
        "both show one check code"
    );
    assert_eq!(
        (joined.name.as_str(), told.name.as_str()),
        ("alpha", "bravo")
    );
    let granted = alpha
        .trust
        .grants(&bravo.id)
        .expect("bravo is a member of alpha's");
    assert_eq!(caps::names(&granted), ["exec"], "what the code said");
    let granted = bravo
        .trust
        .grants(&alpha.id)
        .expect("alpha is a member of bravo's");
    assert_eq!(caps::names(&granted), ["ctx"], "bravo's defaults");
    let addrs = bravo.trust.member(&alpha.id).unwrap().addrs;
    assert_eq!(
        addrs,
        ["/ip4/192.0.2.7/tcp/7717".parse::<Multiaddr>().unwrap()]
    );
    assert_eq!(
        bravo.trust.they_allow(&alpha.id),
        Some(vec!["exec".to_owned()])
    );
}

#[tokio::test]
async fn a_joiner_that_says_it_is_a_browser_is_listed_so_and_granted_what_the_code_said() {
    let dir = testing::scratch("pair-browser");
    let (alpha, mut phone, bravo) = (
        device(&dir, "alpha"),
        device(&dir, "phone"),
        device(&dir, "bravo"),
    );
    phone.pairing.kind = Kind::Browser;
    let (code, _events, _withdraw) = invite(&alpha, &["sessions"]);
    join(&phone, &alpha, &code).await.expect("paired");
    let (code, _events, _withdraw) = invite(&alpha, &["sessions"]);
    join(&bravo, &alpha, &code).await.expect("paired");
    let kind_of = |peer: PeerId| {
        let listed = alpha.trust.list();
        listed
            .iter()
            .find(|l| l.member.peer_id == peer)
            .map(|l| l.settings.kind)
    };
    assert_eq!(kind_of(phone.id), Some(Some(Kind::Browser)));
    assert_eq!(kind_of(bravo.id), Some(None), "a device says no kind");
    // The kind is a label: the browser may do what the code said, as the device may.
    for peer in [phone.id, bravo.id] {
        let granted = alpha.trust.grants(&peer).expect("a member");
        assert_eq!(caps::names(&granted), ["sessions"]);
    }
    // Kept in the trust store, so it survives a restart.
    let text = std::fs::read_to_string(dir.join("alpha.toml")).unwrap();
    let stored = crate::trust::store::parse(&text).unwrap();
    let kept = stored
        .peers
        .iter()
        .find(|p| p.peer_id == phone.id.to_base58());
    assert_eq!(kept.and_then(|p| p.kind), Some(Kind::Browser));
}

#[tokio::test]
async fn a_wrong_secret_pairs_nothing_and_is_audited() {
    let dir = testing::scratch("pair-wrong");
    let (alpha, bravo) = (device(&dir, "alpha"), device(&dir, "bravo"));
    let (mut code, _events, _withdraw) = invite(&alpha, &["exec"]);
    code.secret[0] ^= 1;
    let joined = join(&bravo, &alpha, &code).await;
    assert!(
        matches!(&joined, Err(JoinError::Refused(reason)) if reason == "wrong pairing code"),
        "{joined:?}"
    );
    assert!(!alpha.trust.is_member(&bravo.id));
    assert!(!bravo.trust.is_member(&alpha.id));
    let entries = alpha.audit.read_all();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].result, "denied");
    assert_eq!(entries[0].reason.as_deref(), Some("wrong pairing code"));
    assert!(
        bravo.audit.read_all().is_empty(),
        "the joiner's audit is `join`'s to write"
    );
}

#[tokio::test]
async fn a_stream_that_does_not_start_a_pairing_is_refused() {
    let dir = testing::scratch("pair-garbage");
    let alpha = device(&dir, "alpha");
    let stranger = PeerId::random();
    let noise = Message::Noise { noise: vec![0; 48] };
    let reply = answer_to(&alpha, stranger, &noise).await;
    assert!(
        matches!(reply, Ok(Some(Message::Refused { ref reason })) if reason == "expected a pairing start"),
        "{reply:?}"
    );
    // An invitation that is not open is no better.
    let start = Message::Start {
        invite: vec![7; 8],
        noise: vec![0; 48],
    };
    let reply = answer_to(&alpha, stranger, &start).await;
    assert!(
        matches!(reply, Ok(Some(Message::Refused { .. }))),
        "{reply:?}"
    );
    assert_eq!(alpha.audit.read_all().len(), 2);
}

/// A short code for a new invitation of `inviter`'s, its events, and both guards.
fn invite_short(
    inviter: &Device,
) -> (
    ShortCode,
    tokio::sync::mpsc::Receiver<Paired>,
    impl Drop,
    impl Drop,
) {
    let (claim, events, withdraw) = inviter
        .pairing
        .invitations()
        .open(clock::now_secs() + 60, None, false)
        .unwrap();
    let (short, withdraw_short) = inviter.pairing.open_short(&claim).unwrap();
    (short, events, withdraw, withdraw_short)
}

#[tokio::test]
async fn a_short_code_pairs_over_spake2_and_a_wrong_one_says_the_tries_left() {
    let dir = testing::scratch("pair-short");
    let (alpha, bravo) = (device(&dir, "alpha"), device(&dir, "bravo"));
    let (short, mut events, _withdraw, _withdraw_short) = invite_short(&alpha);
    assert_eq!(short.name, "alpha");

    let mut wrong = short.clone();
    wrong.secret = (wrong.secret + 1) % 1_000_000_000;
    let joined = join_short(&bravo, &alpha, bravo.id, &wrong).await;
    assert!(
        matches!(&joined, Err(JoinError::Refused(reason))
            if reason == "wrong pairing code; 2 more tries before the short code is withdrawn"),
        "{joined:?}"
    );
    assert!(!alpha.trust.is_member(&bravo.id));

    let joined = join_short(&bravo, &alpha, bravo.id, &short)
        .await
        .expect("paired");
    let told = events.try_recv().expect("the inviter's user is told");
    assert_eq!(joined.check_code, told.check_code);
    assert!(alpha.trust.is_member(&bravo.id) && bravo.trust.is_member(&alpha.id));
}

#[tokio::test]
async fn a_short_code_is_bound_to_the_peer_ids_of_the_stream() {
    let dir = testing::scratch("pair-short-relayed");
    let (alpha, bravo) = (device(&dir, "alpha"), device(&dir, "bravo"));
    let (short, _events, _withdraw, _withdraw_short) = invite_short(&alpha);
    // Alpha sees the stream come from another peer than bravo (a device in the middle
    // relaying bravo's messages): the right code pairs nothing.
    let joined = join_short(&bravo, &alpha, PeerId::random(), &short).await;
    assert!(
        matches!(&joined, Err(JoinError::Refused(reason)) if reason.starts_with("wrong pairing code")),
        "{joined:?}"
    );
    assert!(!alpha.trust.is_member(&bravo.id));
}

#[tokio::test]
async fn a_refusal_from_the_other_device_reaches_the_user_as_plain_text() {
    let dir = testing::scratch("pair-refusal-text");
    let bravo = device(&dir, "bravo");
    let (mut joining, mut inviting) = testing::pipe();
    // A device answering a code may say anything in its refusal: terminal escapes, and
    // as much text as a frame holds.
    let said = format!("no\x1b[2J\x1b]0;pwned\x07 {}", "x".repeat(10_000));
    let refuse = async {
        let _ = framed::read::<Message, _>(&mut inviting, MAX_FRAME).await;
        let refusal = Message::Refused { reason: said };
        framed::write(&mut inviting, &refusal, MAX_FRAME)
            .await
            .unwrap();
    };
    let code = Code {
        inviter: PeerId::random().to_bytes(),
        addrs: Vec::new(),
        invite: [1; loopsy_wire::pair::INVITE_ID_LEN],
        secret: [2; loopsy_wire::pair::SECRET_LEN],
        expires: clock::now_secs() + 60,
    };
    let (joined, ()) = tokio::join!(
        bravo
            .pairing
            .handshake_as_joiner(&mut joining, PeerId::random(), &code, None),
        refuse,
    );
    let Err(JoinError::Refused(reason)) = joined else {
        panic!("{joined:?}");
    };
    assert!(reason.starts_with("no"), "{reason:?}");
    assert!(!reason.chars().any(char::is_control), "{reason:?}");
    assert!(
        reason.chars().count() <= super::MAX_REFUSAL,
        "{}",
        reason.len()
    );
}
