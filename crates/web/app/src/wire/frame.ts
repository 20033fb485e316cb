// Length-prefixed CBOR frames, as `crates/wire/src/frame.rs`: a 4-byte big-endian length,
// then that many bytes of CBOR. Every reader states the largest body it accepts, and a
// length above it is refused before any byte of the body is buffered.

import { decodeCbor, encodeCbor } from './cbor.js'

export const HEADER_LEN = 4
/** The default cap on a frame's body. */
export const DEFAULT_MAX_FRAME = 1024 * 1024

export class FrameTooLargeError extends Error {
  constructor (readonly len: number, readonly max: number) {
    super(`frame of ${len} bytes exceeds the limit of ${max} bytes`)
    this.name = 'FrameTooLargeError'
  }
}

/** Encodes `message` as one complete frame, refusing bodies over `max`. */
export function encodeFrame (message: unknown, max: number): Uint8Array {
  const body = encodeCbor(message)
  if (body.length > max) throw new FrameTooLargeError(body.length, max)
  const frame = new Uint8Array(HEADER_LEN + body.length)
  new DataView(frame.buffer).setUint32(0, body.length)
  frame.set(body, HEADER_LEN)
  return frame
}

/** Reads the body length from a frame's prefix, refusing lengths over `max`. */
export function bodyLen (header: Uint8Array, max: number): number {
  const len = new DataView(header.buffer, header.byteOffset, HEADER_LEN).getUint32(0)
  if (len > max) throw new FrameTooLargeError(len, max)
  return len
}

/**
 * Splits the first complete frame off `buf`: its body and the bytes it used, `null` when more
 * bytes are needed; throws when the prefix is over `max`.
 */
export function splitFrame (buf: Uint8Array, max: number): { body: Uint8Array, used: number } | null {
  if (buf.length < HEADER_LEN) return null
  const len = bodyLen(buf, max)
  const end = HEADER_LEN + len
  if (buf.length < end) return null
  return { body: buf.subarray(HEADER_LEN, end), used: end }
}

/** Decodes one message from a frame body (exactly one CBOR item). */
export function decodeBody (body: Uint8Array): unknown {
  return decodeCbor(body)
}
