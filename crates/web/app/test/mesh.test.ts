// The libp2p client against a stand-in device: a js-libp2p node in Node listening on
// WebSocket, answering the pair and session protocols as a Loopsy node does. This checks
// the plumbing (WebSocket, Noise, Yamux, the pinned peer ID, the stream adapter); the wire
// formats are checked against Rust by the vectors.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import { webSockets } from '@libp2p/websockets'
import { createLibp2p } from 'libp2p'
import { codeToText } from '../src/pair/code.js'
import { infoValue } from '../src/session/messages.js'
import { listSessions } from '../src/session/client.js'
import { Mesh, PAIR, SESSION } from '../src/net/mesh.js'
import { MemoryStore } from '../src/net/store.js'
import { framed } from '../src/net/stream.js'
import { inviter } from './helpers.js'

let device: Libp2p
const secret = new Uint8Array(16).fill(5)
const invite = new Uint8Array(8).fill(6)
const checkCodes: string[] = []

before(async () => {
  device = await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0/ws'] },
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()]
  })
  await device.handle(PAIR, async (stream, connection) => {
    const result = await inviter(framed(stream), {
      code: codeFor(device),
      joinerId: connection.remotePeer.toMultihash().bytes,
      hello: { name: 'desktop', grants: ['sessions'], addrs: [] }
    })
    if ('checkCode' in result) checkCodes.push(result.checkCode)
  })
  await device.handle(SESSION, async (stream) => {
    const s = framed(stream)
    await s.write({ type: 'accepted' }, 4096)
    await s.read(256 * 1024)
    const info = { id: 'k3j2', name: 'agent', command: [], status: { state: 'running' as const }, created: 1, lastActivity: 2, clients: 0, waiting: null }
    await s.write({ type: 'sessions', sessions: [infoValue(info)] }, 256 * 1024)
    await s.close()
  })
})

after(async () => { await device.stop() })

function codeFor (node: Libp2p, expires = BigInt(Math.floor(Date.now() / 1000) + 600)) {
  return {
    inviter: node.peerId.toMultihash().bytes,
    addrs: node.getMultiaddrs().map(a => a.decapsulateCode(421).bytes),
    invite,
    secret,
    expires
  }
}

test('a browser pairs over WebSocket, keeps the device, and lists its sessions', async () => {
  const store = new MemoryStore()
  const mesh = await Mesh.start(store, { name: 'phone' })
  const id = mesh.node.peerId.toString()
  try {
    const { device: paired, checkCode } = await mesh.pair(codeToText(codeFor(device)))
    assert.equal(paired.name, 'desktop')
    assert.equal(checkCode, checkCodes.at(-1))
    const devices = await mesh.devices()
    assert.equal(devices.length, 1)
    const sessions = await listSessions(mesh.sessions(devices[0]!))
    assert.deepEqual(sessions.map(s => s.name), ['agent'])
  } finally {
    await mesh.stop()
  }
  // The same store is the same device after a reload.
  const again = await Mesh.start(store, { name: 'phone' })
  try {
    assert.equal((await again.devices()).length, 1)
    assert.equal(again.node.peerId.toString(), id)
  } finally {
    await again.stop()
  }
})

test('a code naming another peer ID than the one that answers is not dialed through', async () => {
  const mesh = await Mesh.start(new MemoryStore(), { name: 'phone' })
  try {
    const impostor = await generateKeyPair('Ed25519')
    const { peerIdFromPrivateKey } = await import('@libp2p/peer-id')
    const code = { ...codeFor(device), inviter: peerIdFromPrivateKey(impostor).toMultihash().bytes }
    // Noise proves the key behind the connection: another key than the pinned one fails.
    await assert.rejects(mesh.pair(codeToText(code)), /peer|PeerId|expected/i)
    assert.equal((await mesh.devices()).length, 0)
  } finally {
    await mesh.stop()
  }
})

test('an expired code is refused before dialing', async () => {
  const mesh = await Mesh.start(new MemoryStore(), { name: 'phone' })
  try {
    await assert.rejects(mesh.pair(codeToText(codeFor(device, 1n))), /expired/)
  } finally {
    await mesh.stop()
  }
})
