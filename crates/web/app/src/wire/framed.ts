// Frames over a byte channel: reads buffer only what a frame's stated length allows, and
// that length is checked against the caller's cap before any body byte is kept.

import type { ByteChannel } from './channel.js'
import { FrameTooLargeError, HEADER_LEN, bodyLen, decodeBody, encodeFrame } from './frame.js'

export class FramedStream {
  private buf: Uint8Array = new Uint8Array(0)
  private readonly source: AsyncIterator<Uint8Array>
  private ended = false

  constructor (readonly channel: ByteChannel) {
    this.source = channel.chunks()
  }

  async write (message: unknown, max: number): Promise<void> {
    await this.channel.write(encodeFrame(message, max))
  }

  /** The next frame's decoded body, or `null` when the stream ended cleanly between frames. */
  async read (max: number): Promise<unknown> {
    const body = await this.readBody(max)
    return body === null ? null : decodeBody(body)
  }

  /** The next frame's raw body, or `null` at a clean end. */
  async readBody (max: number): Promise<Uint8Array | null> {
    if (!await this.fill(HEADER_LEN)) {
      if (this.buf.length === 0) return null
      throw new Error('the stream ended inside a frame header')
    }
    const len = bodyLen(this.buf.subarray(0, HEADER_LEN), max)
    if (!await this.fill(HEADER_LEN + len)) throw new Error('the stream ended inside a frame')
    const body = this.buf.slice(HEADER_LEN, HEADER_LEN + len)
    this.buf = this.buf.subarray(HEADER_LEN + len)
    return body
  }

  close (): Promise<void> { return this.channel.close() }
  abort (reason: Error): void { this.channel.abort(reason) }

  /** Reads until `n` bytes are buffered; false if the stream ends first. Chunks are joined
   * once, when enough have come, so many small chunks cost no quadratic copying. */
  private async fill (n: number): Promise<boolean> {
    if (this.buf.length >= n) return true
    const parts = [this.buf]
    let have = this.buf.length
    while (have < n && !this.ended) {
      const next = await this.source.next()
      if (next.done === true) { this.ended = true; break }
      parts.push(next.value)
      have += next.value.length
    }
    if (parts.length > 1) {
      const joined = new Uint8Array(have)
      let at = 0
      for (const part of parts) { joined.set(part, at); at += part.length }
      this.buf = joined
    }
    return have >= n
  }
}

export { FrameTooLargeError }
