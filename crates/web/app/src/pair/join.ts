// The joiner's side of `/loopsy/pair/1` (the browser always joins: the node shows the code).
// The flow is in `crates/wire/src/pair.rs`: Start with the first Noise message; the inviter's
// Noise reply carries its hello; our hello goes sealed; its sealed Done ends it.

import { decodeCbor, encodeCbor } from '../wire/cbor.js'
import type { FramedStream } from '../wire/framed.js'
import type { Code } from './code.js'
import { checkCode, prologue, psk } from './derive.js'
import { type Hello, MAX_FRAME, type PairMessage, helloValue, readDone, readHello, readPairMessage } from './messages.js'
import { Handshake, MAX_NOISE, type Transport } from './noise.js'

export interface Paired {
  /** The inviter's hello: its name, the grants it gives us, its addresses. */
  theirs: Hello
  /** The six digits both devices show. */
  checkCode: string
}

export class PairError extends Error {
  constructor (message: string, readonly refused = false) {
    super(message)
    this.name = 'PairError'
  }
}

export interface JoinOptions {
  code: Code
  /** Our own peer ID, as bytes (what the libp2p connection authenticated). */
  me: Uint8Array
  hello: Hello
  /** For known-answer tests only. */
  ephemeralForTestingOnly?: Uint8Array
}

/** Runs the joiner's side on an open pair stream. */
export async function join (stream: FramedStream, options: JoinOptions): Promise<Paired> {
  const { code } = options
  const hs = new Handshake({
    psk: psk(code.invite, code.secret),
    prologue: prologue(code.inviter, options.me),
    initiator: true,
    ephemeralForTestingOnly: options.ephemeralForTestingOnly
  })
  const start: PairMessage = { type: 'start', invite: code.invite, noise: hs.write(new Uint8Array(0)) }
  let sendError: unknown
  // Even when the send fails, the inviter may have said why: read its answer regardless.
  await stream.write(start, MAX_FRAME).catch((e: unknown) => { sendError = e })
  const answer = await receive(stream).catch((e: unknown) => {
    throw sendError !== undefined ? new PairError(String(sendError)) : e
  })
  if (answer.type !== 'noise') throw unexpected(answer)
  let theirs: Hello
  try {
    theirs = readHello(decodeCbor(hs.read(answer.noise)))
  } catch {
    throw new PairError('the handshake did not verify')
  }
  const transport = hs.transport()
  await stream.write({ type: 'sealed', data: seal(transport, helloValue(options.hello)) }, MAX_FRAME)
  const last = await receive(stream)
  if (last.type !== 'sealed') throw unexpected(last)
  const done = readDone(open(transport, last.data))
  if (!done.ok) throw new PairError('the other device did not record the pairing', true)
  return { theirs, checkCode: checkCode(transport.handshakeHash) }
}

/** Encrypts a message (its CBOR, unframed) with the handshake's keys. */
export function seal (transport: Transport, message: unknown): Uint8Array {
  const plain = encodeCbor(message)
  // A Noise message, tag included, is at most 65535 bytes.
  if (plain.length + 16 > MAX_NOISE) throw new PairError('message too large to seal')
  return transport.send.encrypt(new Uint8Array(0), plain)
}

/** Decrypts a sealed message and decodes its CBOR. */
export function open (transport: Transport, data: Uint8Array): unknown {
  if (data.length > MAX_NOISE) throw new PairError('sealed message too large')
  return decodeCbor(transport.receive.decrypt(new Uint8Array(0), data))
}

async function receive (stream: FramedStream): Promise<PairMessage> {
  const value = await stream.read(MAX_FRAME)
  if (value === null) throw new PairError('the other device closed the stream')
  return readPairMessage(value)
}

function unexpected (message: PairMessage): PairError {
  return message.type === 'refused'
    ? new PairError(`the other device refused: ${message.reason}`, true)
    : new PairError('unexpected message from the other device')
}
