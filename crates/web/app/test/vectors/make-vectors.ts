// Writes the known-answer vectors shared with the Rust side (`crates/daemon/tests/web_vectors.rs`).
// Inputs are fixed; the outputs are what this TypeScript computes, and the Rust test checks
// that `snow`, ciborium and `loopsy_wire` produce the very same bytes. Run it only when the
// protocol changes on purpose: `npm run vectors`.

import { writeFileSync } from 'node:fs'
import { ed25519 } from '@noble/curves/ed25519.js'
import { multiaddr } from '@multiformats/multiaddr'
import { concat, toHex, utf8 } from '../../src/bytes.js'
import { decodeBase32 } from '../../src/pair/base32.js'
import { CODE_PREFIX, type Code, codeToText, textOfPayload } from '../../src/pair/code.js'
import { checkCode, prologue, psk } from '../../src/pair/derive.js'
import { helloValue } from '../../src/pair/messages.js'
import { Handshake } from '../../src/pair/noise.js'
import { encodeCbor } from '../../src/wire/cbor.js'
import { encodeFrame } from '../../src/wire/frame.js'
import { type MemberRecord, type ReplicaRecord, memberSignedBytes, replicaSignedBytes } from '../../src/replica/records.js'
import { infoValue, inputValue, requestValue } from '../../src/session/messages.js'

const dir = new URL('.', import.meta.url).pathname.replace('/.build/test/vectors/', '/test/vectors/')
const fill = (n: number, byte: number): Uint8Array => new Uint8Array(n).fill(byte)

/** An Ed25519 identity's secret key and peer ID bytes. */
function identity (byte: number): { secret: Uint8Array, peerId: Uint8Array } {
  const secret = fill(32, byte)
  const peerId = concat(Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20), ed25519.getPublicKey(secret))
  return { secret, peerId }
}

const inviter = identity(1)
const joiner = identity(2)
const addrs = ['/ip4/192.168.1.20/tcp/7717/ws', '/ip4/192.168.1.20/udp/7717/quic-v1'].map(a => multiaddr(a).bytes)
const code: Code = { inviter: inviter.peerId, addrs, invite: fill(8, 0x11), secret: fill(16, 0x22), expires: 1893456000n }
const key = psk(code.invite, code.secret)
const bound = prologue(inviter.peerId, joiner.peerId)
const ephemeral = { joiner: fill(32, 0x03), inviter: fill(32, 0x04) }
const inviterHello = { name: 'desktop', grants: ['sessions', 'exec'], addrs: [addrs[0] as Uint8Array] }
const joinerHello = { name: 'phone', grants: [], addrs: [], kind: 'browser' as const }

const j = new Handshake({ psk: key, prologue: bound, initiator: true, ephemeralForTestingOnly: ephemeral.joiner })
const i = new Handshake({ psk: key, prologue: bound, initiator: false, ephemeralForTestingOnly: ephemeral.inviter })
const message1 = j.write(new Uint8Array(0))
i.read(message1)
const payload2 = encodeCbor(helloValue(inviterHello))
const message2 = i.write(payload2)
j.read(message2)
const jt = j.transport()
const it = i.transport()
const sealedHello = jt.send.encrypt(new Uint8Array(0), encodeCbor(helloValue(joinerHello)))
const sealedDone = it.send.encrypt(new Uint8Array(0), encodeCbor({ ok: true }))

const pair = {
  comment: 'Known answers for /loopsy/pair/1, shared by crates/web/app/test and crates/daemon/tests/web_vectors.rs. Regenerate with `npm run vectors` only for a deliberate protocol change.',
  code: {
    inviter: toHex(code.inviter),
    addrs: addrs.map(toHex),
    invite: toHex(code.invite),
    secret: toHex(code.secret),
    expires: Number(code.expires),
    text: codeToText(code)
  },
  bad_codes: [
    { text: 'hello', error: 'not_a_code' },
    { text: 'LOOPSY1-AAAA', error: 'mistyped' },
    { text: 'LOOPSY1-!!', error: 'mistyped' },
    { text: codeToText(code).slice(0, -3) + 'AAA', error: 'mistyped' },
    { text: versioned(2), error: 'unknown_version' },
    { text: 'LOOPSY1-' + 'A'.repeat(2100), error: 'malformed' }
  ],
  joiner: toHex(joiner.peerId),
  psk: toHex(key),
  prologue: toHex(bound),
  ephemeral: { joiner: toHex(ephemeral.joiner), inviter: toHex(ephemeral.inviter) },
  message1: toHex(message1),
  payload2: toHex(payload2),
  message2: toHex(message2),
  handshake_hash: toHex(jt.handshakeHash),
  check_code: checkCode(jt.handshakeHash),
  sealed_hello: toHex(sealedHello),
  sealed_done: toHex(sealedDone),
  frames: [
    { type: 'start', invite: code.invite, noise: message1 },
    { type: 'noise', noise: message2 },
    { type: 'sealed', data: sealedHello },
    { type: 'refused', reason: 'wrong pairing code' }
  ].map(m => toHex(encodeFrame(m, 16 * 1024)))
}

/** A well-formed code of another format version (its checksum right). */
function versioned (version: number): string {
  const all = decodeBase32(codeToText(code).slice(CODE_PREFIX.length)) as Uint8Array
  const payload = all.slice(0, -4)
  payload[0] = version
  return textOfPayload(payload)
}

const info = {
  id: 'k3j2', name: 'agent', command: ['claude'], status: { state: 'running' as const },
  created: 1764000000, lastActivity: 1764000100, clients: 1, waiting: null
}
const exited = { ...info, name: null, status: { state: 'exited' as const, code: 3 } }
const frames = {
  comment: 'Frames as the TypeScript side writes them; the Rust side decodes each as its type and must re-encode the same bytes.',
  session_request: [
    requestValue({ op: 'new', name: 'agent', argv: ['claude', '--continue'], rows: 24, cols: 80 }),
    requestValue({ op: 'new', name: null, argv: [], rows: 844, cols: 390 }),
    requestValue({ op: 'list' }),
    requestValue({ op: 'kill', session: 'agent' }),
    requestValue({ op: 'attach', session: 'agent', offset: null, rows: 40, cols: 100 }),
    requestValue({ op: 'attach', session: 'k3j2', offset: 123456789012, rows: 0, cols: 0 })
  ].map(hexFrame),
  session_input: [
    inputValue({ type: 'keys', data: utf8('echo web-$((6*7))\r') }),
    inputValue({ type: 'resize', rows: 50, cols: 120 })
  ].map(hexFrame),
  session_reply: [
    { type: 'attached', info: infoValue(info), offset: 7, screen: utf8('\x1b[H\x1b[2Jhi'), rows: 24, cols: 80 },
    { type: 'attached', info: infoValue(exited), offset: 4294967296, screen: null, rows: 24, cols: 80 },
    { type: 'output', offset: 9, data: utf8('web-42\r\n') },
    { type: 'exited', code: 0 },
    { type: 'exited', code: null },
    { type: 'exited', code: -1 },
    { type: 'error', message: 'no session named x' },
    { type: 'sessions', sessions: [infoValue(info), infoValue(exited)] },
    { type: 'created', ...infoValue(info) },
    { type: 'killed' }
  ].map(hexFrame),
  admission: [{ type: 'accepted' }, { type: 'refused', reason: 'not paired with this device' }].map(hexFrame),
  sync: [
    { type: 'digest', collection: 'sessions', entries: [] },
    { type: 'records', records: [] },
    { type: 'delta', records: [utf8('r1')], want: [] }
  ].map(hexFrame)
}

function hexFrame (value: unknown): string {
  return toHex(encodeFrame(value, 4 * 1024 * 1024))
}

/** A registry record as its host writes it, signed with the inviter's key. */
const sessionKey = concat(Uint8Array.of(inviter.peerId.length), inviter.peerId, utf8('k3j2'))
const replica: ReplicaRecord = {
  key: sessionKey,
  value: encodeCbor(infoValue(info)),
  clock: { ms: 1764000100123, counter: 2 },
  author: inviter.peerId,
  expires: null,
  signature: new Uint8Array(0)
}
replica.signature = ed25519.sign(replicaSignedBytes(replica, 'sessions'), inviter.secret)
const members: MemberRecord[] = [
  { subject: joiner.peerId, author: inviter.peerId, name: 'phone', addrs: [], revoked: false, at: 1764000000000, allow: ['sessions'], signature: new Uint8Array(0) },
  { subject: inviter.peerId, author: inviter.peerId, name: 'desktop', addrs: [addrs[0] as Uint8Array], revoked: false, at: 1764000000001, allow: null, signature: new Uint8Array(0) }
]
for (const m of members) m.signature = ed25519.sign(memberSignedBytes(m), inviter.secret)
const records = {
  comment: 'Signed records as a host writes them: the Rust side must compute the same signed bytes and verify the signatures.',
  session: {
    record: toHex(encodeCbor({ ...replica })),
    signed_bytes: toHex(replicaSignedBytes(replica, 'sessions'))
  },
  members: members.map(m => ({
    record: toHex(encodeCbor({ subject: m.subject, author: m.author, name: m.name, addrs: m.addrs, revoked: m.revoked, at: m.at, ...(m.allow === null ? {} : { allow: m.allow }), signature: m.signature })),
    signed_bytes: toHex(memberSignedBytes(m))
  }))
}

for (const [name, value] of Object.entries({ pair, frames, records })) {
  writeFileSync(`${dir}${name}.json`, JSON.stringify(value, null, 2) + '\n')
}
console.log(`vectors written to ${dir}`)
