// Ed25519 peer IDs as bytes: the identity multihash of the protobuf public key. Loopsy's
// identities are Ed25519, so a signature is checked with the key the peer ID itself holds.

import { ed25519 } from '@noble/curves/ed25519.js'
import { base58btc } from 'multiformats/bases/base58'

// identity multihash (0x00), 36 bytes; protobuf: key type Ed25519 (0x08 0x01), data (0x12 0x20).
const ED25519_PREFIX = Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20)

/** The Ed25519 public key inside a peer ID, or `null` for any other kind of ID. */
export function ed25519Key (peerId: Uint8Array): Uint8Array | null {
  if (peerId.length !== ED25519_PREFIX.length + 32) return null
  if (!ED25519_PREFIX.every((b, i) => peerId[i] === b)) return null
  return peerId.slice(ED25519_PREFIX.length)
}

export function verifiedBy (peerId: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const key = ed25519Key(peerId)
  if (key === null || signature.length !== 64) return false
  try {
    return ed25519.verify(signature, message, key)
  } catch {
    return false
  }
}

/** The peer ID as libp2p writes it (base58btc, no multibase prefix). */
export function peerIdText (peerId: Uint8Array): string {
  return base58btc.encode(peerId).slice(1)
}

export function peerIdBytes (text: string): Uint8Array {
  return base58btc.decode(`z${text}`)
}
