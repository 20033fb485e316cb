// What both sides derive around the handshake, as `crates/wire/src/pair.rs`.

import { sha256 } from '@noble/hashes/sha2.js'
import { concat, utf8 } from '../bytes.js'

/** The Noise pre-shared key for an invitation: 32 bytes from the code's secret. */
export function psk (invite: Uint8Array, secret: Uint8Array): Uint8Array {
  return sha256(concat(utf8('loopsy pair psk v1'), invite, secret))
}

/**
 * The handshake prologue: binds the handshake to the two peer IDs the libp2p connection
 * authenticated, so it cannot be replayed or relayed between another pair of devices.
 */
export function prologue (inviter: Uint8Array, joiner: Uint8Array): Uint8Array {
  const parts = [utf8('loopsy pair v1')]
  for (const id of [inviter, joiner]) {
    // The Rust side writes the length as a u16; peer IDs are far shorter.
    parts.push(Uint8Array.of((id.length >> 8) & 0xff, id.length & 0xff), id)
  }
  return concat(...parts)
}

/** Six digits from the handshake hash, as "123 456", for the user to compare. */
export function checkCode (handshakeHash: Uint8Array): string {
  const digest = sha256(concat(utf8('loopsy check code v1'), handshakeHash))
  const n = new DataView(digest.buffer, digest.byteOffset).getUint32(0) % 1_000_000
  const three = (v: number): string => String(v).padStart(3, '0')
  return `${three(Math.floor(n / 1000))} ${three(n % 1000)}`
}
