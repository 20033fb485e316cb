// The browser's own libp2p identity: an Ed25519 key made on first use and kept in the store,
// so a reload is the same device (and stays paired).

import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { Store } from './store.js'

const KEY = 'identity'

export async function loadOrCreateIdentity (store: Store): Promise<PrivateKey> {
  const saved = await store.get(KEY)
  if (saved !== undefined) {
    const key = privateKeyFromProtobuf(saved)
    if (key.type !== 'Ed25519') throw new Error('the stored identity is not an Ed25519 key')
    return key
  }
  const key = await generateKeyPair('Ed25519')
  await store.put(KEY, privateKeyToProtobuf(key))
  return key
}
