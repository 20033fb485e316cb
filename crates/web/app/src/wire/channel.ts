// A byte stream the protocols run over: a libp2p stream in the app (see `net/stream.ts`), an
// in-memory pipe in tests. Framing and the protocols are written against this alone.

export interface ByteChannel {
  /** Writes bytes, resolving once they are accepted (with backpressure). */
  write: (bytes: Uint8Array) => Promise<void>
  /** The bytes as they arrive; ends when the other side closes its writing half. */
  chunks: () => AsyncIterator<Uint8Array>
  /** Closes our writing half gracefully. */
  close: () => Promise<void>
  /** Ends the stream at once, both ways. */
  abort: (reason: Error) => void
}

/** Two channels joined back to back, for tests and for running both sides in one page. */
export function pipe (): [ByteChannel, ByteChannel] {
  const a = new Queue()
  const b = new Queue()
  return [end(a, b), end(b, a)]
}

function end (incoming: Queue, outgoing: Queue): ByteChannel {
  return {
    write: async (bytes) => { outgoing.push(bytes.slice()) },
    chunks: () => incoming.iterator(),
    close: async () => { outgoing.finish() },
    abort: (reason) => { outgoing.fail(reason); incoming.fail(reason) }
  }
}

class Queue {
  private readonly items: Uint8Array[] = []
  private ended = false
  private error: Error | undefined
  private wake: (() => void) | undefined

  push (bytes: Uint8Array): void {
    if (this.ended) throw new Error('stream closed')
    this.items.push(bytes)
    this.notify()
  }

  finish (): void { this.ended = true; this.notify() }
  fail (e: Error): void { this.error ??= e; this.ended = true; this.notify() }

  private notify (): void { const w = this.wake; this.wake = undefined; w?.() }

  iterator (): AsyncIterator<Uint8Array> {
    return {
      next: async () => {
        for (;;) {
          if (this.error !== undefined) throw this.error
          const item = this.items.shift()
          if (item !== undefined) return { value: item, done: false }
          if (this.ended) return { value: undefined, done: true }
          await new Promise<void>(resolve => { this.wake = resolve })
        }
      }
    }
  }
}
