// The frames of `/loopsy/pair/1` and what travels sealed inside them, as
// `crates/wire/src/pair.rs`. Field order follows the Rust declarations, so the bytes match.

import { MalformedError } from '../wire/cbor.js'
import { bool, bytes, bytesItem, list, object, optional, tag, text, textItem } from '../wire/shape.js'

/** Largest pair protocol frame. */
export const MAX_FRAME = 16 * 1024
/** Most addresses taken from a hello, as the Rust side. */
export const MAX_HELLO_ADDRS = 16

export type PairMessage =
  | { type: 'start', invite: Uint8Array, noise: Uint8Array }
  | { type: 'noise', noise: Uint8Array }
  | { type: 'sealed', data: Uint8Array }
  | { type: 'refused', reason: string }

/**
 * What kind of member a side is (`pair::Kind`): a label shown in `trust ls`, never a grant.
 * A node's hello leaves it out; a kind this app does not know reads as a device.
 */
export type Kind = 'device' | 'browser'

export interface Hello {
  name: string
  /** The capabilities this side grants the other. */
  grants: string[]
  /** Where this side can be reached, as multiaddr bytes. */
  addrs: Uint8Array[]
  /** Absent for a device, as the Rust side sends it. */
  kind?: Kind
}

export interface Done { ok: boolean }

export function readPairMessage (value: unknown): PairMessage {
  const f = object(value, 'pair message')
  switch (tag(f)) {
    case 'start': return { type: 'start', invite: bytes(f, 'invite', 64), noise: bytes(f, 'noise', MAX_FRAME) }
    case 'noise': return { type: 'noise', noise: bytes(f, 'noise', MAX_FRAME) }
    case 'sealed': return { type: 'sealed', data: bytes(f, 'data', MAX_FRAME) }
    case 'refused': return { type: 'refused', reason: text(f, 'reason', 1024) }
    default: throw new MalformedError('unknown pair message')
  }
}

/** A hello as it travels: fields in the Rust order, `kind` only when not a device. */
export function helloValue (hello: Hello): Record<string, unknown> {
  const value: Record<string, unknown> = { name: hello.name, grants: hello.grants, addrs: hello.addrs }
  if (hello.kind !== undefined && hello.kind !== 'device') value.kind = hello.kind
  return value
}

export function readHello (value: unknown): Hello {
  const f = object(value, 'hello')
  return {
    name: text(f, 'name', 256),
    grants: list(f, 'grants', 64, textItem(64)),
    // The Rust side takes the first 16; a peer sending hundreds is refused outright here.
    addrs: list(f, 'addrs', 256, bytesItem(1024)).slice(0, MAX_HELLO_ADDRS),
    kind: optional(f, 'kind', (g, k) => text(g, k, 64)) === 'browser' ? 'browser' : 'device'
  }
}

export function readDone (value: unknown): Done {
  return { ok: bool(object(value, 'done'), 'ok') }
}
