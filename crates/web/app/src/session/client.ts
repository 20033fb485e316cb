// A client of `/loopsy/session/1` (the flow is in `crates/wire/src/session.rs`): one-shot
// requests (new, list, kill), and attaching, with resumption from the output offset so that
// after a lost connection nothing is lost and nothing repeats.

import { RefusedError, admitted } from '../wire/admission.js'
import type { FramedStream } from '../wire/framed.js'
import { type Info, type Input, MAX_FRAME, type Reply, type Request, clampSize, inputValue, readReply, requestValue } from './messages.js'

/** Opens a new `/loopsy/session/1` stream to the session's host. */
export type OpenStream = () => Promise<FramedStream>

export class SessionError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'SessionError'
  }
}

/** Sends one request and returns its one reply (new, list, kill). */
export async function request (open: OpenStream, req: Request): Promise<Reply> {
  const stream = await open()
  try {
    // The request may go before the admission is read, as the gate allows.
    await stream.write(requestValue(req), MAX_FRAME)
    await admitted(stream)
    const value = await stream.read(MAX_FRAME)
    if (value === null) throw new SessionError('the host closed the stream without answering')
    const reply = readReply(value)
    if (reply.type === 'error') throw new SessionError(reply.message)
    return reply
  } finally {
    await stream.close().catch(() => {})
  }
}

export async function listSessions (open: OpenStream): Promise<Info[]> {
  const reply = await request(open, { op: 'list' })
  if (reply.type !== 'sessions') throw new SessionError('unexpected reply to list')
  return reply.sessions
}

/** What the attached terminal is told. */
export interface Screen {
  /** Redraw from scratch: reset the terminal, then write `screen` (at this size). */
  redraw: (screen: Uint8Array, rows: number, cols: number) => void
  /** Output that follows what was shown, each byte once. */
  output: (data: Uint8Array) => void
}

/** How an attachment's stream ended. */
export type End =
  | { why: 'exited', code: number | null }
  | { why: 'detached' }
  | { why: 'lost', error: unknown }

export interface AttachOptions {
  session: string
  rows: number
  cols: number
  screen: Screen
  /** Watch only: no keys and no sizes go to the host, which drops them for this client too. */
  readOnly?: boolean
}

/**
 * One attached session. `offset` is the next output byte expected; `resume()` attaches again
 * from there over a new stream after the old one was lost.
 */
export class Attachment {
  /** The next output byte expected, once attached. */
  offset: number | null = null
  info: Info | null = null
  private stream: FramedStream | null = null
  private detached = false

  constructor (private readonly open: OpenStream, private readonly options: AttachOptions) {}

  /**
   * Attaches (or resumes) and serves output until the stream ends; says how it ended.
   * Throws what retrying will not mend: the gate's refusal of a first attach, or a host
   * breaking the protocol.
   */
  async run (): Promise<End> {
    if (this.detached) return { why: 'detached' }
    const size = this.readOnly ? { rows: 0, cols: 0 } : clampSize(this.options.rows, this.options.cols)
    let stream: FramedStream
    try {
      stream = await this.open()
      this.stream = stream
      const readOnly = this.readOnly
      await stream.write(requestValue({ op: 'attach', session: this.options.session, offset: this.offset, ...size, readOnly }), MAX_FRAME)
      await admitted(stream)
    } catch (error) {
      if (this.detached) return { why: 'detached' }
      // Refused before ever attaching: the user asked, so tell them why rather than try
      // again unseen. A resume keeps trying: the host may still hold the lost streams and
      // refuse as busy for a while.
      if (error instanceof RefusedError && this.offset === null) throw error
      return { why: 'lost', error }
    }
    try {
      for (;;) {
        const value = await stream.read(MAX_FRAME)
        if (value === null) return this.detached ? { why: 'detached' } : { why: 'lost', error: new SessionError('the host closed the stream') }
        const reply = readReply(value)
        switch (reply.type) {
          case 'attached': this.attached(reply); break
          case 'output': this.output(reply.offset, reply.data); break
          case 'exited': return { why: 'exited', code: reply.code }
          case 'error': throw new SessionError(reply.message)
          default: throw new SessionError(`unexpected ${reply.type} while attached`)
        }
      }
    } catch (error) {
      if (this.detached) return { why: 'detached' }
      if (error instanceof SessionError) throw error
      return { why: 'lost', error }
    } finally {
      if (this.stream === stream) this.stream = null
    }
  }

  /** Whether a stream to the host is open now (keys typed meanwhile have nowhere to go). */
  get connected (): boolean { return this.stream !== null }

  /** Whether this attachment only watches. */
  get readOnly (): boolean { return this.options.readOnly === true }

  /** Types `data`; a watch-only attachment sends nothing. */
  async keys (data: Uint8Array): Promise<void> {
    if (this.readOnly) return
    await this.send({ type: 'keys', data })
  }

  /** Sizes the session's terminal; a watch-only attachment sends nothing. */
  async resize (rows: number, cols: number): Promise<void> {
    if (this.readOnly) return
    this.options.rows = rows
    this.options.cols = cols
    const size = clampSize(rows, cols)
    if (size.rows > 0 && size.cols > 0) await this.send({ type: 'resize', ...size })
  }

  /** Ends the attachment; the session goes on on its host. */
  async detach (): Promise<void> {
    this.detached = true
    const stream = this.stream
    this.stream = null
    await stream?.close().catch(() => {})
    stream?.abort(new Error('detached'))
  }

  private async send (input: Input): Promise<void> {
    const stream = this.stream
    if (stream === null) throw new SessionError('not attached')
    await stream.write(inputValue(input), MAX_FRAME)
  }

  private attached (reply: Extract<Reply, { type: 'attached' }>): void {
    this.info = reply.info
    if (reply.screen !== null) {
      // A host's size beyond the session limits would have the terminal allocate for it.
      const size = clampSize(reply.rows, reply.cols)
      this.options.screen.redraw(reply.screen, size.rows, size.cols)
    } else if (this.offset === null || reply.offset !== this.offset) {
      // Resumed output must start where ours stopped; anything else would skip or repeat.
      throw new SessionError('the host resumed at another offset than asked')
    }
    this.offset = reply.offset
  }

  private output (offset: number, data: Uint8Array): void {
    const at = this.offset
    if (at === null) throw new SessionError('output before the session was attached')
    if (offset > at) throw new SessionError('output skipped bytes')
    const end = offset + data.length
    if (end <= at) return
    // Bytes already shown are dropped: each byte reaches the screen once.
    this.options.screen.output(data.subarray(at - offset))
    this.offset = end
  }
}
