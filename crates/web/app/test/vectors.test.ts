// The known answers shared with Rust (`crates/daemon/tests/web_vectors.rs`), checked here
// against the TypeScript side.

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fromHex, toHex, utf8 } from '../src/bytes.js'
import { CodeError, codeFromText, codeToText } from '../src/pair/code.js'
import { checkCode, prologue, psk } from '../src/pair/derive.js'
import { readDone, readHello, readPairMessage } from '../src/pair/messages.js'
import { Handshake } from '../src/pair/noise.js'
import { readAdmission } from '../src/wire/admission.js'
import { decodeCbor, encodeCbor } from '../src/wire/cbor.js'
import { decodeBody, encodeFrame, splitFrame } from '../src/wire/frame.js'
import { readReply } from '../src/session/messages.js'
import { devices, registrySessions } from '../src/replica/records.js'
import { vectors } from './helpers.js'

const pair = vectors('pair.json')

test('the Rust side\'s own known answers for the check code and the PSK', () => {
  // From `crates/wire/src/pair.rs`'s tests, computed there with Python's hashlib.
  assert.equal(checkCode(new Uint8Array(32)), '394 062')
  assert.equal(checkCode(utf8('loopsy')), '008 992')
  assert.equal(toHex(psk(new Uint8Array(8).fill(1), new Uint8Array(16).fill(2)).subarray(0, 8)), 'f1240b6c50422d89')
})

test('the pairing code reads and writes as in Rust', () => {
  const c = pair.code
  const code = codeFromText(c.text)
  assert.equal(toHex(code.inviter), c.inviter)
  assert.deepEqual(code.addrs.map(toHex), c.addrs)
  assert.equal(toHex(code.invite), c.invite)
  assert.equal(toHex(code.secret), c.secret)
  assert.equal(code.expires, BigInt(c.expires))
  assert.equal(codeToText(code), c.text)
  // Lower case and line breaks, as a chat program might deliver it.
  const copied = ` ${c.text.toLowerCase().replace(/(.{30})/g, '$1\n')} `
  assert.deepEqual(codeFromText(copied), code)
  for (const bad of pair.bad_codes) {
    assert.throws(() => codeFromText(bad.text), (e: unknown) => e instanceof CodeError && e.kind === bad.error, bad.text)
  }
})

test('a typo anywhere in the code is caught', () => {
  const text: string = pair.code.text
  for (let i = 'LOOPSY1-'.length; i < text.length; i++) {
    const typo = text.slice(0, i) + (text[i] === 'A' ? 'B' : 'A') + text.slice(i + 1)
    assert.throws(() => codeFromText(typo), CodeError)
  }
})

test('the handshake produces the known messages, hash, check code and sealed messages', () => {
  const invite = fromHex(pair.code.invite)
  const key = psk(invite, fromHex(pair.code.secret))
  assert.equal(toHex(key), pair.psk)
  const bound = prologue(fromHex(pair.code.inviter), fromHex(pair.joiner))
  assert.equal(toHex(bound), pair.prologue)
  const joiner = new Handshake({ psk: key, prologue: bound, initiator: true, ephemeralForTestingOnly: fromHex(pair.ephemeral.joiner) })
  const inviter = new Handshake({ psk: key, prologue: bound, initiator: false, ephemeralForTestingOnly: fromHex(pair.ephemeral.inviter) })
  const m1 = joiner.write(new Uint8Array(0))
  assert.equal(toHex(m1), pair.message1)
  assert.equal(inviter.read(m1).length, 0)
  const m2 = inviter.write(fromHex(pair.payload2))
  assert.equal(toHex(m2), pair.message2)
  assert.equal(toHex(joiner.read(m2)), pair.payload2)
  assert.equal(readHello(decodeCbor(fromHex(pair.payload2))).name, 'desktop')
  assert.equal(readHello(decodeCbor(fromHex(pair.payload2))).kind, 'device')
  const jt = joiner.transport()
  const it = inviter.transport()
  assert.equal(toHex(jt.handshakeHash), pair.handshake_hash)
  assert.equal(checkCode(jt.handshakeHash), pair.check_code)
  const hello = readHello(decodeCbor(it.receive.decrypt(new Uint8Array(0), fromHex(pair.sealed_hello))))
  assert.equal(hello.name, 'phone')
  assert.equal(hello.kind, 'browser')
  assert.equal(toHex(it.send.encrypt(new Uint8Array(0), encodeCbor({ ok: true }))), pair.sealed_done)
  assert.deepEqual(readDone(decodeCbor(jt.receive.decrypt(new Uint8Array(0), fromHex(pair.sealed_done)))), { ok: true })
  for (const hex of pair.frames) readPairMessage(roundTrip(hex))
})

/** Decodes a frame and encodes it again: the same bytes, as Rust checks too. */
function roundTrip (hex: string): unknown {
  const bytes = fromHex(hex)
  const split = splitFrame(bytes, 4 * 1024 * 1024)
  assert.ok(split !== null && split.used === bytes.length)
  const value = decodeBody(split.body)
  assert.equal(toHex(encodeFrame(value, 4 * 1024 * 1024)), hex)
  return value
}

test('the frames shared with Rust read with our readers and re-encode the same', () => {
  const frames = vectors('frames.json')
  for (const hex of frames.session_request) roundTrip(hex)
  for (const hex of frames.session_input) roundTrip(hex)
  const replies = frames.session_reply.map((hex: string) => readReply(roundTrip(hex)))
  assert.deepEqual(replies.map((r: { type: string }) => r.type), ['attached', 'attached', 'output', 'exited', 'exited', 'exited', 'error', 'sessions', 'created', 'killed'])
  for (const hex of frames.admission) readAdmission(roundTrip(hex))
  for (const hex of frames.sync) roundTrip(hex)
})

test('signed records verify, and a tampered one is dropped', () => {
  const records = vectors('records.json')
  const now = Date.UTC(2026, 0, 1)
  const sessions = registrySessions([fromHex(records.session.record)], now)
  assert.equal(sessions.length, 1)
  assert.equal(sessions[0]?.info.name, 'agent')
  assert.equal(toHex(sessions[0]!.host), pair.code.inviter)
  const tampered = fromHex(records.session.record)
  tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1
  assert.equal(registrySessions([tampered], now).length, 0)
  const listed = devices(records.members.map((m: { record: string }) => fromHex(m.record)))
  assert.deepEqual(listed.map(d => d.name), ['desktop', 'phone'])
})
