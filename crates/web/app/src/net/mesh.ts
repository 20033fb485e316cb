// The browser as a libp2p peer of the mesh: its own Ed25519 identity, WebSocket (and circuit
// relay) transports, Noise and Yamux as a node has them. It dials a device's WebSocket
// address with the device's peer ID pinned (Noise then proves who answered) and opens the
// Loopsy protocols on it. Nothing dials the browser: it has no address to listen on.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { webSockets } from '@libp2p/websockets'
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { type Code, codeFromText } from '../pair/code.js'
import { type Hello } from '../pair/messages.js'
import { PairError, join } from '../pair/join.js'
import { peerIdText } from '../replica/peer-id.js'
import { pull } from '../replica/sync.js'
import type { OpenStream } from '../session/client.js'
import type { FramedStream } from '../wire/framed.js'
import { loadOrCreateIdentity } from './identity.js'
import { type PairedDevice, loadDevices, saveDevice } from './devices.js'
import type { Store } from './store.js'
import { framed } from './stream.js'

/** The protocols, as `crates/wire/src/protocol.rs` names them. */
export const PAIR = '/loopsy/pair/1'
export const SESSION = '/loopsy/session/1'
export const SYNC = '/loopsy/sync/1'

export interface MeshOptions {
  /** This browser's name in the mesh, told to the devices it pairs with. */
  name: string
}

export class Mesh {
  private constructor (
    readonly node: Libp2p,
    private readonly store: Store,
    private readonly options: MeshOptions
  ) {}

  static async start (store: Store, options: MeshOptions): Promise<Mesh> {
    const privateKey: PrivateKey = await loadOrCreateIdentity(store)
    const node = await createLibp2p({
      privateKey,
      addresses: { listen: [] },
      transports: [webSockets(), circuitRelayTransport()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      // Devices on the LAN have private addresses, which js-libp2p refuses by default in a
      // browser. The addresses come from a code, a hello or a member record (which any
      // member writes), so they are only hints: every dial pins the device's peer ID, and
      // Noise fails unless that device answers.
      connectionGater: { denyDialMultiaddr: async () => false },
      // The standard identify protocol (`/ipfs/id/1.0.0`), as the node's libp2p speaks it,
      // and ping, answered as well as sent. js-libp2p pings every connection every 10 s and
      // closes it when no answer comes; a node's libp2p stops answering pings on a
      // connection whose other end answers none of its own (rust-libp2p's ping handler goes
      // inactive), so without this every connection to a device was cut after 10 to 15 s,
      // and an attached session reattached, dropping the keys typed meanwhile.
      services: { identify: identify(), ping: ping() },
      nodeInfo: { name: 'loopsy-web', version: '0.1.0', userAgent: 'loopsy-web/0.1.0' }
    })
    return new Mesh(node, store, options)
  }

  /** This browser's peer ID, as bytes (what a device's connection authenticates). */
  get peerId (): Uint8Array { return this.node.peerId.toMultihash().bytes }

  /**
   * Pairs with the device that shows `text` (from `loopsy pair`); the check code to compare.
   * The device is saved once the handshake completed (both sides proved the code's secret):
   * the user compares the check code after, as with `loopsy join`.
   */
  async pair (text: string): Promise<{ device: PairedDevice, checkCode: string }> {
    const code = usableCode(text, Date.now())
    const stream = await this.open({ peerId: code.inviter, addrs: code.addrs }, PAIR)
    try {
      // A browser serves no protocol: it grants nothing and has no address to give.
      const hello: Hello = { name: this.options.name, grants: [], addrs: [], kind: 'browser' }
      const paired = await join(stream, { code, me: this.peerId, hello })
      const device: PairedDevice = { peerId: code.inviter, name: paired.theirs.name, addrs: [...code.addrs, ...paired.theirs.addrs] }
      await saveDevice(this.store, device)
      return { device, checkCode: paired.checkCode }
    } finally {
      await stream.close().catch(() => {})
    }
  }

  devices (): Promise<PairedDevice[]> { return loadDevices(this.store) }

  /** Opens `protocol` on the device, dialing it if need be with its peer ID pinned. */
  async open (device: Pick<PairedDevice, 'peerId' | 'addrs'>, protocol: string): Promise<FramedStream> {
    const id = peerIdText(device.peerId)
    const targets = dialable(device.addrs).map(a => a.encapsulate(`/p2p/${id}`))
    if (targets.length === 0) {
      throw new Error('the device has no address a browser can dial (it needs a WebSocket listener or a relay)')
    }
    try {
      // A circuit through a relay is a "limited" connection to js-libp2p (the relay may
      // end it after a time or a byte count); the protocols still run on it, Noise end to
      // end, and a session attached over it reattaches from its offset when it ends.
      const stream = await this.node.dialProtocol(targets, protocol, {
        signal: AbortSignal.timeout(20_000),
        runOnLimitedConnection: true
      })
      return framed(stream)
    } catch (error) {
      throw new Error(`cannot reach the device: ${describe(error)}`)
    }
  }

  /** Opens session streams to `device`, for the session client. */
  sessions (device: PairedDevice): OpenStream {
    return async () => await this.open(device, SESSION)
  }

  /** Every record of `collection` that `device` shares with this browser. */
  async pull (device: PairedDevice, collection: string): Promise<Uint8Array[]> {
    return await pull(await this.open(device, SYNC), collection)
  }

  /** Whether this browser holds an open connection to the device whose peer ID is `id`. */
  connectedTo (id: string): boolean {
    return this.node.getConnections().some(c => c.status === 'open' && c.remotePeer.toString() === id)
  }

  async stop (): Promise<void> { await this.node.stop() }
}

/**
 * The code in `text` if it can still be used at `nowMs`: what the page shows before the
 * user taps to pair (the inviter it leads to), and what `Mesh.pair` dials.
 */
export function usableCode (text: string, nowMs: number): Code {
  const code = codeFromText(text)
  if (code.expires <= BigInt(Math.floor(nowMs / 1000))) {
    throw new PairError('the pairing code expired; ask for a new one')
  }
  return code
}

/** The addresses a browser can dial: WebSocket (plain or TLS) or a relay circuit. */
export function dialable (addrs: Uint8Array[]): Multiaddr[] {
  const out: Multiaddr[] = []
  for (const bytes of addrs) {
    let ma: Multiaddr
    try {
      ma = multiaddr(bytes)
    } catch {
      continue
    }
    const names = ma.getComponents().map(c => c.name)
    if (names.includes('p2p-circuit') || names.includes('ws') || names.includes('wss')) {
      // A trailing /p2p/ of the device itself is added again, pinned, by the caller.
      const last = ma.getComponents().at(-1)
      out.push(last?.name === 'p2p' ? ma.decapsulateCode(last.code) : ma)
    }
  }
  return out
}

/** What went wrong, in words: a failed WebSocket rejects with a bare event. */
export function describe (error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return error.errors.map(describe).join('; ')
  if (error instanceof Error) return error.message
  if (typeof Event !== 'undefined' && error instanceof Event) return `the connection failed (${error.type})`
  return String(error)
}

export { PairError }
