import assert from 'node:assert/strict'
import { test } from 'node:test'
import { codeToText } from '../src/pair/code.js'
import { peerIdText } from '../src/replica/peer-id.js'
import { pairPreview } from '../src/ui/pairing.js'

// An Ed25519 peer ID: identity multihash of the protobuf public key.
const inviter = Uint8Array.from([0x00, 0x24, 0x08, 0x01, 0x12, 0x20, ...new Uint8Array(32).fill(7)])
const now = 1_800_000_000_000
const code = (expires: bigint): string => codeToText({ inviter, addrs: [], invite: new Uint8Array(8), secret: new Uint8Array(16).fill(1), expires })

test('a code names the device a tap would pair with, before anything is dialed', () => {
  const preview = pairPreview(code(BigInt(now / 1000 + 600)), now)
  assert.ok(preview.ok)
  assert.equal(preview.peerId, peerIdText(inviter))
  assert.match(preview.text, new RegExp(peerIdText(inviter)))
  assert.match(preview.text, /10 min/)
})

test('no pair button for nothing, a mistyped or an expired code', () => {
  assert.deepEqual(pairPreview('  ', now), { ok: false, text: '' })
  assert.equal(pairPreview('hello', now).ok, false)
  const good = code(BigInt(now / 1000 + 600))
  assert.match(pairPreview(good.slice(0, -2), now).text, /mistyped/)
  assert.match(pairPreview(code(BigInt(now / 1000)), now).text, /expired/)
})
