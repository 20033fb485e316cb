// The gate's verdict, the first frame the serving side writes on every application stream
// (`crates/wire/src/admission.rs`, `crates/daemon/src/gate.rs`). A client may send its
// request before reading it.

import { MalformedError } from './cbor.js'
import type { FramedStream } from './framed.js'
import { object, tag, text } from './shape.js'

export const MAX_FRAME = 4096

export type Admission = { type: 'accepted' } | { type: 'refused', reason: string }

export function readAdmission (value: unknown): Admission {
  const f = object(value, 'admission')
  switch (tag(f)) {
    case 'accepted': return { type: 'accepted' }
    case 'refused': return { type: 'refused', reason: text(f, 'reason', MAX_FRAME) }
    default: throw new MalformedError('unknown admission')
  }
}

export class RefusedError extends Error {
  constructor (readonly reason: string) {
    super(`refused: ${reason}`)
    this.name = 'RefusedError'
  }
}

/** Reads the admission frame; throws `RefusedError` with the gate's reason. */
export async function admitted (stream: FramedStream): Promise<void> {
  const value = await stream.read(MAX_FRAME)
  if (value === null) throw new RefusedError('the device closed the stream before admitting it')
  const admission = readAdmission(value)
  if (admission.type === 'refused') throw new RefusedError(admission.reason)
}
