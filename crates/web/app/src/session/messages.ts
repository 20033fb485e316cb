// The frames of `/loopsy/session/1`, as `crates/wire/src/session.rs`. Field order follows the
// Rust declarations, so the bytes match.

import { MalformedError } from '../wire/cbor.js'
import { type Fields, bytes, int, list, object, optional, tag, text, textItem, uint } from '../wire/shape.js'

export const MAX_ROWS = 500
export const MAX_COLS = 1000
/** Largest session frame; output travels in pieces of at most `CHUNK`. */
export const MAX_FRAME = 256 * 1024
export const CHUNK = 64 * 1024
export const MAX_NAME = 64
const MAX_ARGS = 4096
const MAX_ID = 256
const U16 = 0xffff
const U32 = 0xffffffff

export type Request =
  | { op: 'new', name: string | null, argv: string[], rows: number, cols: number }
  | { op: 'list' }
  | { op: 'kill', session: string }
  /**
   * Without `offset`, from the current screen; with it, resume there. 0 × 0 keeps the size.
   * `readOnly`: watch only (the host drops this client's keys and sizes).
   */
  | { op: 'attach', session: string, offset: number | null, rows: number, cols: number, readOnly?: boolean }

export type Input =
  | { type: 'keys', data: Uint8Array }
  | { type: 'resize', rows: number, cols: number }

export type Status = { state: 'running' } | { state: 'exited', code: number | null }

/** What asked for a person's attention (`crates/wire/src/attention.rs`). */
export type AttentionKind = 'bell' | 'notify' | 'exit' | 'note'
const KINDS: readonly string[] = ['bell', 'notify', 'exit', 'note']
/** Longest attention text a host writes. */
const MAX_TEXT = 1024

/** A session waiting for its person: since when (milliseconds since the epoch), and why. */
export interface Waiting {
  sinceMs: number
  kind: AttentionKind
  text: string | null
}

export interface Info {
  id: string
  name: string | null
  command: string[]
  status: Status
  /** Seconds since the epoch. */
  created: number
  lastActivity: number
  clients: number
  /** Set while the program waits for its person and no client has typed or attached. */
  waiting: Waiting | null
}

export type Reply =
  | { type: 'created', info: Info }
  | { type: 'sessions', sessions: Info[] }
  | { type: 'killed' }
  | { type: 'attached', info: Info, offset: number, screen: Uint8Array | null, rows: number, cols: number }
  | { type: 'output', offset: number, data: Uint8Array }
  | { type: 'exited', code: number | null }
  | { type: 'error', message: string }

/** A request as it travels: the tag first, then the fields in the Rust order. */
export function requestValue (request: Request): Fields {
  switch (request.op) {
    case 'new': return { op: 'new', name: request.name, argv: request.argv, rows: request.rows, cols: request.cols }
    case 'list': return { op: 'list' }
    case 'kill': return { op: 'kill', session: request.session }
    case 'attach': {
      const fields: Fields = { op: 'attach', session: request.session, offset: request.offset, rows: request.rows, cols: request.cols }
      // Absent when false, as serde leaves it out: a plain attach is what it was.
      if (request.readOnly === true) fields.read_only = true
      return fields
    }
  }
}

export function inputValue (input: Input): Fields {
  return input.type === 'keys'
    ? { type: 'keys', data: input.data }
    : { type: 'resize', rows: input.rows, cols: input.cols }
}

/** A terminal size within the host's limits (it would cut a larger one anyway). */
export function clampSize (rows: number, cols: number): { rows: number, cols: number } {
  const clamp = (v: number, max: number): number => Math.max(0, Math.min(max, Math.floor(v)))
  return { rows: clamp(rows, MAX_ROWS), cols: clamp(cols, MAX_COLS) }
}

export function readReply (value: unknown): Reply {
  const f = object(value, 'session reply')
  switch (tag(f)) {
    case 'created': return { type: 'created', info: readInfoFields(f) }
    case 'sessions': return { type: 'sessions', sessions: list(f, 'sessions', 4096, readInfo) }
    case 'killed': return { type: 'killed' }
    case 'attached': {
      const info = readInfo(f.info, 'info')
      return {
        type: 'attached',
        info,
        offset: uint(f, 'offset'),
        screen: optional(f, 'screen', (g, k) => bytes(g, k, MAX_FRAME)),
        // `#[serde(default)]`: an older host may leave the size out.
        rows: f.rows === undefined ? 0 : uint(f, 'rows', U16),
        cols: f.cols === undefined ? 0 : uint(f, 'cols', U16)
      }
    }
    case 'output': return { type: 'output', offset: uint(f, 'offset'), data: bytes(f, 'data', MAX_FRAME) }
    case 'exited': return { type: 'exited', code: optional(f, 'code', int) }
    case 'error': return { type: 'error', message: text(f, 'message', 4096) }
    default: throw new MalformedError('unknown session reply')
  }
}

/**
 * A session's info. `Reply::Created(Info)` is a newtype variant of an internally tagged enum:
 * serde writes the info's fields beside the tag, so it is read from the same map.
 */
export function readInfo (value: unknown, what = 'info'): Info {
  return readInfoFields(object(value, what))
}

function readInfoFields (f: Fields): Info {
  return {
    id: text(f, 'id', MAX_ID),
    name: optional(f, 'name', (g, k) => text(g, k, 256)),
    command: list(f, 'command', MAX_ARGS, textItem(128 * 1024)),
    status: readStatus(f.status),
    created: uint(f, 'created'),
    lastActivity: uint(f, 'last_activity'),
    clients: uint(f, 'clients', U32),
    waiting: optional(f, 'waiting', (g, k) => readWaiting(g[k]))
  }
}

function readWaiting (value: unknown): Waiting {
  const f = object(value, 'waiting')
  const kind = text(f, 'kind', 16)
  if (!KINDS.includes(kind)) throw new MalformedError('waiting: unknown kind')
  return {
    sinceMs: uint(f, 'since_ms'),
    kind: kind as AttentionKind,
    text: optional(f, 'text', (g, k) => text(g, k, MAX_TEXT))
  }
}

/** An info as serde writes it (for tests and vectors). */
export function infoValue (info: Info): Fields {
  return {
    id: info.id,
    name: info.name,
    command: info.command,
    status: info.status.state === 'running' ? { state: 'running' } : { state: 'exited', code: info.status.code },
    created: info.created,
    last_activity: info.lastActivity,
    clients: info.clients,
    // `skip_serializing_if = "Option::is_none"`, as the host writes it.
    ...(info.waiting === null
      ? {}
      : { waiting: { since_ms: info.waiting.sinceMs, kind: info.waiting.kind, ...(info.waiting.text === null ? {} : { text: info.waiting.text }) } })
  }
}

function readStatus (value: unknown): Status {
  const f = object(value, 'status')
  switch (tag(f, 'state')) {
    case 'running': return { state: 'running' }
    case 'exited': return { state: 'exited', code: optional(f, 'code', int) }
    default: throw new MalformedError('unknown session status')
  }
}
