// Test helpers: the other end of each protocol, played in TypeScript over an in-memory pipe.

import { readFileSync } from 'node:fs'
import { decodeCbor, encodeCbor } from '../src/wire/cbor.js'
import { FramedStream } from '../src/wire/framed.js'
import { pipe } from '../src/wire/channel.js'
import type { Code } from '../src/pair/code.js'
import { checkCode, prologue, psk } from '../src/pair/derive.js'
import { type Hello, MAX_FRAME, helloValue, readHello, readPairMessage } from '../src/pair/messages.js'
import { Handshake } from '../src/pair/noise.js'

/** A vectors file from `test/vectors/`, read from the sources (not the build). */
export function vectors (name: string): any {
  const url = new URL(`../../test/vectors/${name}`, import.meta.url)
  return JSON.parse(readFileSync(url, 'utf8'))
}

export function framedPair (): [FramedStream, FramedStream] {
  const [a, b] = pipe()
  return [new FramedStream(a), new FramedStream(b)]
}

export interface InviterOptions {
  code: Code
  /** The joiner's peer ID as this side's connection authenticated it. */
  joinerId: Uint8Array
  hello: Hello
}

/**
 * The inviter's side of `/loopsy/pair/1`, as `crates/daemon/src/pair/mod.rs` runs it:
 * resolves with the check code and the joiner's hello, or with the refusal it sent.
 */
export async function inviter (stream: FramedStream, options: InviterOptions): Promise<{ checkCode: string, theirs: Hello } | { refused: string }> {
  const refuse = async (reason: string): Promise<{ refused: string }> => {
    await stream.write({ type: 'refused', reason }, MAX_FRAME)
    await stream.close()
    return { refused: reason }
  }
  const start = readPairMessage(await stream.read(MAX_FRAME))
  if (start.type !== 'start') return await refuse('expected a pairing start')
  const hs = new Handshake({
    psk: psk(options.code.invite, options.code.secret),
    prologue: prologue(options.code.inviter, options.joinerId),
    initiator: false
  })
  try {
    hs.read(start.noise)
  } catch {
    return await refuse('wrong pairing code')
  }
  await stream.write({ type: 'noise', noise: hs.write(encodeCbor(helloValue(options.hello))) }, MAX_FRAME)
  const transport = hs.transport()
  const sealed = readPairMessage(await stream.read(MAX_FRAME))
  if (sealed.type !== 'sealed') return await refuse('the joiner broke off the handshake')
  const theirs = readHello(decodeCbor(transport.receive.decrypt(new Uint8Array(0), sealed.data)))
  const done = transport.send.encrypt(new Uint8Array(0), encodeCbor({ ok: true }))
  await stream.write({ type: 'sealed', data: done }, MAX_FRAME)
  await stream.close()
  return { checkCode: checkCode(transport.handshakeHash), theirs }
}
