// Pairing codes, as `crates/wire/src/pair.rs`: `LOOPSY1-` then base32 of
// version (1) · expires (u64 BE) · invite (8) · secret (16) · inviter (len8 + bytes)
// · address count (≤ 8) · each address (len8 + bytes) · the first 4 bytes of SHA-256 of it all.

import { sha256 } from '@noble/hashes/sha2.js'
import { decodeBase32, encodeBase32 } from './base32.js'

export const CODE_PREFIX = 'LOOPSY1-'
export const SECRET_LEN = 16
export const INVITE_ID_LEN = 8
export const MAX_CODE_ADDRS = 8
export const MAX_CODE_TEXT = 2048
const CHECKSUM_LEN = 4
const FORMAT_VERSION = 1

export interface Code {
  /** The inviter's peer ID, as bytes. */
  inviter: Uint8Array
  /** The inviter's addresses, as multiaddr bytes. */
  addrs: Uint8Array[]
  invite: Uint8Array
  secret: Uint8Array
  /** Expiry, in seconds since the Unix epoch (a bigint: the field is a u64). */
  expires: bigint
}

export type CodeErrorKind = 'not_a_code' | 'mistyped' | 'unknown_version' | 'malformed'

export class CodeError extends Error {
  constructor (readonly kind: CodeErrorKind, detail?: string) {
    super(describe(kind, detail))
    this.name = 'CodeError'
  }
}

function describe (kind: CodeErrorKind, detail?: string): string {
  switch (kind) {
    case 'not_a_code': return `not a Loopsy pairing code (it should start with ${CODE_PREFIX})`
    case 'mistyped': return 'the pairing code is mistyped or incomplete; copy it again'
    case 'unknown_version': return 'the pairing code is of a newer format; update this page'
    case 'malformed': return `the pairing code is malformed: ${detail ?? ''}`
  }
}

export function codeToText (code: Code): string {
  const parts: number[] = [FORMAT_VERSION]
  const expires = new Uint8Array(8)
  new DataView(expires.buffer).setBigUint64(0, code.expires)
  parts.push(...expires, ...code.invite, ...code.secret)
  pushShort(parts, code.inviter)
  const addrs = code.addrs.slice(0, MAX_CODE_ADDRS)
  parts.push(addrs.length)
  for (const addr of addrs) pushShort(parts, addr)
  return textOfPayload(Uint8Array.from(parts))
}

/** A code's text from its binary form: the checksum appended, base32, the prefix. */
export function textOfPayload (payload: Uint8Array): string {
  const all = new Uint8Array(payload.length + CHECKSUM_LEN)
  all.set(payload)
  all.set(sha256(payload).subarray(0, CHECKSUM_LEN), payload.length)
  return CODE_PREFIX + encodeBase32(all)
}

/** Reads a code, forgiving case and the spaces or line breaks of copying. */
export function codeFromText (text: string): Code {
  if (new TextEncoder().encode(text).length > MAX_CODE_TEXT) throw new CodeError('malformed', 'too long')
  const cleaned = text.replace(/\s+/gu, '').replace(/[a-z]+/g, s => s.toUpperCase())
  if (!cleaned.startsWith(CODE_PREFIX)) throw new CodeError('not_a_code')
  const bytes = decodeBase32(cleaned.slice(CODE_PREFIX.length))
  if (bytes === null || bytes.length < CHECKSUM_LEN) throw new CodeError('mistyped')
  const payload = bytes.subarray(0, bytes.length - CHECKSUM_LEN)
  const sum = bytes.subarray(bytes.length - CHECKSUM_LEN)
  const expected = sha256(payload)
  if (!sum.every((b, i) => b === expected[i])) throw new CodeError('mistyped')
  const r = new Reader(payload)
  if (r.take(1)[0] !== FORMAT_VERSION) throw new CodeError('unknown_version')
  const expires = new DataView(r.take(8).slice().buffer).getBigUint64(0)
  const invite = r.take(INVITE_ID_LEN).slice()
  const secret = r.take(SECRET_LEN).slice()
  const inviter = r.short()
  const count = r.take(1)[0] as number
  if (count > MAX_CODE_ADDRS) throw new CodeError('malformed', 'too many addresses')
  const addrs: Uint8Array[] = []
  for (let i = 0; i < count; i++) addrs.push(r.short())
  if (!r.done()) throw new CodeError('malformed', 'trailing bytes')
  return { inviter, addrs, invite, secret, expires }
}

function pushShort (out: number[], bytes: Uint8Array): void {
  const cut = bytes.subarray(0, 255)
  out.push(cut.length, ...cut)
}

class Reader {
  private at = 0
  constructor (private readonly bytes: Uint8Array) {}

  take (n: number): Uint8Array {
    if (this.bytes.length - this.at < n) throw new CodeError('malformed', 'truncated')
    const out = this.bytes.subarray(this.at, this.at + n)
    this.at += n
    return out
  }

  short (): Uint8Array { return this.take(this.take(1)[0] as number).slice() }
  done (): boolean { return this.at === this.bytes.length }
}
