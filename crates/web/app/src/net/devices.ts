// The devices this browser paired with, kept in the store as CBOR.

import { equal } from '../bytes.js'
import { peerIdText } from '../replica/peer-id.js'
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

/**
 * The devices to show and dial, by peer ID text: the paired ones as pairing told them, then
 * the members the latest records name. A paired device keeps its name, and its addresses
 * unless pairing gave none. Built afresh from each answer, so a member revoked or moved
 * since an earlier one is not kept. This browser (`me`, its peer ID text) is a member too,
 * but not a device to show or dial.
 */
export function knownDevices (paired: PairedDevice[], members: PairedDevice[], me = ''): Map<string, PairedDevice> {
  const out = new Map<string, PairedDevice>()
  for (const d of paired) out.set(peerIdText(d.peerId), d)
  for (const m of members) {
    const id = peerIdText(m.peerId)
    if (id === me) continue
    const known = out.get(id)
    out.set(id, known === undefined ? m : { ...known, addrs: known.addrs.length > 0 ? known.addrs : m.addrs })
  }
  return out
}
