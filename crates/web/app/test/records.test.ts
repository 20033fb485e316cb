import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ed25519 } from '@noble/curves/ed25519.js'
import { concat, utf8 } from '../src/bytes.js'
import { type MemberRecord, type ReplicaRecord, devices, memberSignedBytes, registrySessions, replicaSignedBytes } from '../src/replica/records.js'
import { knownDevices } from '../src/net/devices.js'
import { peerIdText } from '../src/replica/peer-id.js'
import { infoValue } from '../src/session/messages.js'
import { encodeCbor } from '../src/wire/cbor.js'

function identity (byte: number): { secret: Uint8Array, peerId: Uint8Array } {
  const secret = new Uint8Array(32).fill(byte)
  return { secret, peerId: concat(Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20), ed25519.getPublicKey(secret)) }
}

const host = identity(1)
const other = identity(2)
const now = 1_764_000_000_000
const info = { id: 'k3j2', name: 'agent', command: [], status: { state: 'running' as const }, created: 1, lastActivity: 2, clients: 0, waiting: null }

/** A registry record for a session of `keyHost`, written and signed by `author`. */
function session (author = host, keyHost = host, change: Partial<ReplicaRecord> = {}): Uint8Array {
  const record: ReplicaRecord = {
    key: concat(Uint8Array.of(keyHost.peerId.length), keyHost.peerId, utf8(info.id)),
    value: encodeCbor(infoValue(info)),
    clock: { ms: now, counter: 0 },
    author: author.peerId,
    expires: null,
    signature: new Uint8Array(0),
    ...change
  }
  record.signature = ed25519.sign(replicaSignedBytes(record, 'sessions'), author.secret)
  return encodeCbor({ ...record })
}

test('a session record signed by its host is listed', () => {
  assert.equal(registrySessions([session()], now).length, 1)
})

test('a host cannot write another host\'s sessions', () => {
  assert.equal(registrySessions([session(other, host)], now).length, 0)
})

test('deleted and expired sessions are not listed', () => {
  assert.equal(registrySessions([session(host, host, { value: null })], now).length, 0)
  assert.equal(registrySessions([session(host, host, { expires: now - 1 })], now).length, 0)
  assert.equal(registrySessions([session(host, host, { expires: now + 1000 })], now).length, 1)
})

test('a record signed for another collection does not verify here', () => {
  const record: ReplicaRecord = {
    key: concat(Uint8Array.of(host.peerId.length), host.peerId, utf8('x')),
    value: encodeCbor(infoValue(info)), clock: { ms: now, counter: 0 }, author: host.peerId, expires: null, signature: new Uint8Array(0)
  }
  record.signature = ed25519.sign(replicaSignedBytes(record, 'ctx'), host.secret)
  assert.equal(registrySessions([encodeCbor({ ...record })], now).length, 0)
})

test('garbage records are skipped, not thrown', () => {
  assert.deepEqual(registrySessions([Uint8Array.of(0xff), Uint8Array.of(0xa0), new Uint8Array(0)], now), [])
  assert.deepEqual(devices([Uint8Array.of(0x81, 0x00), new Uint8Array(5000)]), [])
})

test('a revocation later than the admission removes the device', () => {
  const member = (revoked: boolean, at: number): Uint8Array => {
    const r: MemberRecord = { subject: other.peerId, author: host.peerId, name: 'phone', addrs: [], revoked, at, allow: null, signature: new Uint8Array(0) }
    r.signature = ed25519.sign(memberSignedBytes(r), host.secret)
    return encodeCbor({ subject: r.subject, author: r.author, name: r.name, addrs: r.addrs, revoked: r.revoked, at: r.at, signature: r.signature })
  }
  assert.deepEqual(devices([member(false, 1)]).map(d => d.name), ['phone'])
  assert.deepEqual(devices([member(false, 1), member(true, 2)]), [])
  assert.deepEqual(devices([member(true, 1), member(false, 2)]).map(d => d.name), ['phone'])
})

test('a member revoked or moved since the last answer is not kept, and pairing\'s word wins', () => {
  const member = (revoked: boolean, at: number, addr: number): Uint8Array => {
    const r: MemberRecord = { subject: other.peerId, author: host.peerId, name: 'phone', addrs: [Uint8Array.of(addr)], revoked, at, allow: null, signature: new Uint8Array(0) }
    r.signature = ed25519.sign(memberSignedBytes(r), host.secret)
    return encodeCbor({ subject: r.subject, author: r.author, name: r.name, addrs: r.addrs, revoked: r.revoked, at: r.at, signature: r.signature })
  }
  const paired = [{ peerId: host.peerId, name: 'desktop', addrs: [] }]
  const first = knownDevices(paired, devices([member(false, 1, 1)]))
  assert.deepEqual([...first.values()].map(d => d.name), ['desktop', 'phone'])
  // The device moved: its new addresses, not the first ones.
  const moved = knownDevices(paired, devices([member(false, 1, 1), member(false, 2, 2)]))
  assert.deepEqual(moved.get(peerIdText(other.peerId))?.addrs, [Uint8Array.of(2)])
  // Then revoked: gone from the list, though an earlier answer named it.
  const revoked = knownDevices(paired, devices([member(false, 1, 1), member(true, 3, 1)]))
  assert.deepEqual([...revoked.values()].map(d => d.name), ['desktop'])
  // A paired device keeps the name pairing gave it; with no address of its own it takes the record's.
  const named = knownDevices([{ peerId: other.peerId, name: 'my phone', addrs: [] }], devices([member(false, 1, 7)]))
  assert.deepEqual([...named.values()], [{ peerId: other.peerId, name: 'my phone', addrs: [Uint8Array.of(7)] }])
  // The browser itself is a member, and not a device of its own list.
  const mine = knownDevices(paired, devices([member(false, 1, 1)]), peerIdText(other.peerId))
  assert.deepEqual([...mine.values()].map(d => d.name), ['desktop'])
})
