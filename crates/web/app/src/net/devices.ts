// The devices this browser paired with, kept in the store as CBOR.

import { equal } from '../bytes.js'
import { decodeCbor, encodeCbor } from '../wire/cbor.js'
import { bytes, bytesItem, list, object, text } from '../wire/shape.js'
import type { Store } from './store.js'

const KEY = 'devices'
const MAX_DEVICES = 256

export interface PairedDevice {
  peerId: Uint8Array
  name: string
  /** Multiaddr bytes, from the code and the device's hello. */
  addrs: Uint8Array[]
}

export async function loadDevices (store: Store): Promise<PairedDevice[]> {
  const saved = await store.get(KEY)
  if (saved === undefined) return []
  const value = decodeCbor(saved)
  if (!Array.isArray(value)) return []
  return value.slice(0, MAX_DEVICES).map(v => {
    const f = object(v, 'device')
    return { peerId: bytes(f, 'peer_id', 64), name: text(f, 'name', 256), addrs: list(f, 'addrs', 64, bytesItem(1024)) }
  })
}

/** Adds the device, or replaces what was known of it. */
export async function saveDevice (store: Store, device: PairedDevice): Promise<void> {
  const devices = (await loadDevices(store)).filter(d => !equal(d.peerId, device.peerId))
  devices.push(device)
  await store.put(KEY, encodeCbor(devices.map(d => ({ peer_id: d.peerId, name: d.name, addrs: d.addrs }))))
}
