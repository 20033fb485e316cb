// The frames of `/loopsy/pair/1` and what travels sealed inside them, as
// `crates/wire/src/pair.rs`. Field order follows the Rust declarations, so the bytes match.

import { MalformedError } from '../wire/cbor.js'
import { bool, bytes, bytesItem, list, object, tag, text, textItem } from '../wire/shape.js'

/** Largest pair protocol frame. */
export const MAX_FRAME = 16 * 1024
/** Most addresses taken from a hello, as the Rust side. */
export const MAX_HELLO_ADDRS = 16

export type PairMessage =
  | { type: 'start', invite: Uint8Array, noise: Uint8Array }
  | { type: 'noise', noise: Uint8Array }
  | { type: 'sealed', data: Uint8Array }
  | { type: 'refused', reason: string }

export interface Hello {
  name: string
  /** The capabilities this side grants the other. */
  grants: string[]
  /** Where this side can be reached, as multiaddr bytes. */
  addrs: Uint8Array[]
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

/** A hello as it travels: fields in the Rust order. */
export function helloValue (hello: Hello): Record<string, unknown> {
  return { name: hello.name, grants: hello.grants, addrs: hello.addrs }
}

export function readHello (value: unknown): Hello {
  const f = object(value, 'hello')
  return {
    name: text(f, 'name', 256),
    grants: list(f, 'grants', 64, textItem(64)),
    // The Rust side takes the first 16; a peer sending hundreds is refused outright here.
    addrs: list(f, 'addrs', 256, bytesItem(1024)).slice(0, MAX_HELLO_ADDRS)
  }
}

export function readDone (value: unknown): Done {
  return { ok: bool(object(value, 'done'), 'ok') }
}
