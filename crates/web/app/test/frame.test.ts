import assert from 'node:assert/strict'
import { test } from 'node:test'
import { MalformedError } from '../src/wire/cbor.js'
import { pipe } from '../src/wire/channel.js'
import { DEFAULT_MAX_FRAME, FrameTooLargeError, decodeBody, encodeFrame, splitFrame } from '../src/wire/frame.js'
import { FramedStream } from '../src/wire/framed.js'

test('a frame is a big-endian length, then CBOR', () => {
  assert.deepEqual([...encodeFrame('hi', DEFAULT_MAX_FRAME)], [0, 0, 0, 3, 0x62, 0x68, 0x69])
})

test('a message over the cap is refused when encoding', () => {
  assert.throws(() => encodeFrame(new Uint8Array(100), 50), FrameTooLargeError)
})

test('a prefix over the cap is refused before the body arrives', async () => {
  const [ours, theirs] = pipe()
  const stream = new FramedStream(ours)
  // Only the header is ever sent: a reader that waited for the body would hang here.
  await theirs.write(Uint8Array.of(0x00, 0x98, 0x96, 0x80))
  await assert.rejects(stream.read(DEFAULT_MAX_FRAME), (e: unknown) =>
    e instanceof FrameTooLargeError && e.len === 10_000_000)
  assert.throws(() => splitFrame(Uint8Array.of(0x00, 0x98, 0x96, 0x80), DEFAULT_MAX_FRAME), FrameTooLargeError)
})

test('trailing bytes after the message are an error', () => {
  assert.throws(() => decodeBody(Uint8Array.of(0x07, 0x00)), MalformedError)
  assert.equal(decodeBody(Uint8Array.of(0x07)), 7)
})

test('deep nesting is refused, not a stack overflow', () => {
  const body = new Uint8Array(100_001).fill(0x81)
  body[100_000] = 0
  assert.throws(() => decodeBody(body), MalformedError)
  // Shallow nesting is fine.
  assert.deepEqual(decodeBody(Uint8Array.of(0x81, 0x81, 0x00)), [[0]])
})

test('frames split in order, and wait for every byte', () => {
  const a = encodeFrame({ id: 1, name: 'a', data: new Uint8Array([1, 2, 3]), flag: null }, DEFAULT_MAX_FRAME)
  const b = encodeFrame({ id: 2, name: 'b', data: new Uint8Array(0), flag: true }, DEFAULT_MAX_FRAME)
  for (let cut = 0; cut < a.length; cut++) assert.equal(splitFrame(a.subarray(0, cut), DEFAULT_MAX_FRAME), null)
  const both = new Uint8Array([...a, ...b])
  const first = splitFrame(both, DEFAULT_MAX_FRAME)
  assert.ok(first !== null)
  assert.deepEqual(decodeBody(first.body), { id: 1, name: 'a', data: new Uint8Array([1, 2, 3]), flag: null })
  const second = splitFrame(both.subarray(first.used), DEFAULT_MAX_FRAME)
  assert.ok(second !== null)
  assert.equal((decodeBody(second.body) as { id: number }).id, 2)
})

test('frames arriving a byte at a time are read whole', async () => {
  const [ours, theirs] = pipe()
  const stream = new FramedStream(ours)
  const frames = [encodeFrame({ n: 1 }, 64), encodeFrame({ n: 2 }, 64)]
  const bytes = new Uint8Array([...frames[0]!, ...frames[1]!])
  for (const byte of bytes) await theirs.write(Uint8Array.of(byte))
  await theirs.close()
  assert.deepEqual(await stream.read(64), { n: 1 })
  assert.deepEqual(await stream.read(64), { n: 2 })
  assert.equal(await stream.read(64), null)
})

test('a stream that ends inside a frame is an error, not a clean end', async () => {
  const [ours, theirs] = pipe()
  const stream = new FramedStream(ours)
  await theirs.write(encodeFrame({ n: 1 }, 64).subarray(0, 6))
  await theirs.close()
  await assert.rejects(stream.read(64), /inside a frame/)
})

test('garbage never throws anything but a frame or decoding error', () => {
  let seed = 42
  const random = (): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed }
  for (let round = 0; round < 5000; round++) {
    const bytes = Uint8Array.from({ length: random() % 64 }, () => random() % 256)
    try {
      const split = splitFrame(bytes, 4096)
      if (split !== null) decodeBody(split.body)
      decodeBody(bytes)
    } catch (e) {
      assert.ok(e instanceof MalformedError || e instanceof FrameTooLargeError, String(e))
    }
  }
})
