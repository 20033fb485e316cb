// Records of the replicated collections, read and checked as a member would: the session
// registry's last-writer-wins records (`crates/wire/src/replica.rs`) and member records
// (`crates/wire/src/member.rs`). A record whose signature does not verify is dropped.

import { concat, equal, utf8 } from '../bytes.js'
import { type Info, readInfo } from '../session/messages.js'
import { decodeCbor, encodeCbor } from '../wire/cbor.js'
import { type Fields, bool, bytes, bytesItem, list, object, optional, text, textItem, uint } from '../wire/shape.js'
import { verifiedBy } from './peer-id.js'

export const SESSIONS = 'sessions'
export const MEMBERS = 'members'

export interface ReplicaRecord {
  key: Uint8Array
  value: Uint8Array | null
  clock: { ms: number, counter: number }
  author: Uint8Array
  expires: number | null
  signature: Uint8Array
}

export function readReplicaRecord (encoded: Uint8Array): ReplicaRecord {
  const f = object(decodeCbor(encoded), 'record')
  const clock = object(f.clock, 'clock')
  return {
    key: bytes(f, 'key', 256),
    value: optional(f, 'value', (g, k) => bytes(g, k, 64 * 1024)),
    clock: { ms: uint(clock, 'ms'), counter: uint(clock, 'counter', 0xffffffff) },
    author: bytes(f, 'author', 64),
    expires: optional(f, 'expires', uint),
    signature: f.signature === undefined ? new Uint8Array(0) : bytes(f, 'signature', 256)
  }
}

/** The bytes the author signs: the collection's name, then the record with no signature. */
export function replicaSignedBytes (record: ReplicaRecord, collection: string): Uint8Array {
  const unsigned: Fields = {
    key: record.key,
    value: record.value,
    clock: { ms: record.clock.ms, counter: record.clock.counter },
    author: record.author,
    expires: record.expires,
    signature: new Uint8Array(0)
  }
  return concat(utf8(`loopsy replica record v1 ${collection}\n`), encodeCbor(unsigned))
}

/** A session in the registry, and its host's peer ID. */
export interface HostedSession { host: Uint8Array, info: Info }

/**
 * The live sessions among registry records: signed by their author, written by the host
 * itself (the key starts with the host's peer ID), not deleted and not expired.
 */
export function registrySessions (encoded: Uint8Array[], nowMs: number): HostedSession[] {
  const out: HostedSession[] = []
  for (const bytes of encoded) {
    let record: ReplicaRecord
    let info: Info
    try {
      record = readReplicaRecord(bytes)
      if (record.value === null || (record.expires !== null && record.expires <= nowMs)) continue
      const host = hostOf(record.key)
      if (host === null || !equal(host, record.author)) continue
      if (!verifiedBy(record.author, replicaSignedBytes(record, SESSIONS), record.signature)) continue
      info = readInfo(decodeCbor(record.value))
    } catch {
      continue
    }
    out.push({ host: record.author, info })
  }
  return out.sort((a, b) => b.info.created - a.info.created)
}

/** A registry key's host: the peer ID after its length byte. */
function hostOf (key: Uint8Array): Uint8Array | null {
  const len = key[0]
  if (len === undefined || key.length < 1 + len) return null
  return key.subarray(1, 1 + len)
}

export interface MemberRecord {
  subject: Uint8Array
  author: Uint8Array
  name: string
  addrs: Uint8Array[]
  revoked: boolean
  at: number
  allow: string[] | null
  signature: Uint8Array
}

export function readMemberRecord (encoded: Uint8Array): MemberRecord {
  if (encoded.length > 4096) throw new Error('member record too large')
  const f = object(decodeCbor(encoded), 'member record')
  return {
    subject: bytes(f, 'subject', 64),
    author: bytes(f, 'author', 64),
    name: text(f, 'name', 256),
    addrs: list(f, 'addrs', 16, bytesItem(256)),
    revoked: bool(f, 'revoked'),
    at: uint(f, 'at'),
    allow: optional(f, 'allow', (g, k) => list(g, k, 32, textItem(32))),
    signature: f.signature === undefined ? new Uint8Array(0) : bytes(f, 'signature', 256)
  }
}

export function memberSignedBytes (record: MemberRecord): Uint8Array {
  const unsigned: Fields = {
    subject: record.subject,
    author: record.author,
    name: record.name,
    addrs: record.addrs,
    revoked: record.revoked,
    at: record.at
  }
  // Absent when `None` (`skip_serializing_if`), so records from before grants travelled verify.
  if (record.allow !== null) unsigned.allow = record.allow
  unsigned.signature = new Uint8Array(0)
  return concat(utf8('loopsy member record v1'), encodeCbor(unsigned))
}

export interface Device { peerId: Uint8Array, name: string, addrs: Uint8Array[] }

/**
 * The devices the records show as members, for display: per device its latest signed record,
 * when that is not a revocation. Who is trusted is decided by the nodes, not by this list.
 */
export function devices (encoded: Uint8Array[]): Device[] {
  const latest = new Map<string, MemberRecord>()
  for (const bytes of encoded) {
    let record: MemberRecord
    try {
      record = readMemberRecord(bytes)
      if (!verifiedBy(record.author, memberSignedBytes(record), record.signature)) continue
    } catch {
      continue
    }
    const id = record.subject.join(',')
    const seen = latest.get(id)
    if (seen === undefined || record.at > seen.at || (record.at === seen.at && record.revoked)) latest.set(id, record)
  }
  return [...latest.values()]
    .filter(r => !r.revoked)
    .map(r => ({ peerId: r.subject, name: r.name, addrs: r.addrs }))
    .sort((a, b) => a.name.localeCompare(b.name))
}
