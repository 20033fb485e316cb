// A libp2p stream as the byte channel the protocols run over (js-libp2p 3's message streams:
// `send` with backpressure through `onDrain`, async iteration for reading).

import type { Stream } from '@libp2p/interface'
import type { ByteChannel } from '../wire/channel.js'
import { FramedStream } from '../wire/framed.js'

export function channelOf (stream: Stream): ByteChannel {
  return {
    write: async (bytes) => {
      if (!stream.send(bytes)) await stream.onDrain()
    },
    chunks: () => {
      const source = stream[Symbol.asyncIterator]()
      return {
        next: async () => {
          const next = await source.next()
          if (next.done === true) return { value: undefined, done: true }
          const chunk = next.value
          return { value: chunk instanceof Uint8Array ? chunk : chunk.subarray(), done: false }
        }
      }
    },
    close: async () => { await stream.close() },
    abort: (reason) => { stream.abort(reason) }
  }
}

export function framed (stream: Stream): FramedStream {
  return new FramedStream(channelOf(stream))
}
