// The opener's side of `/loopsy/sync/1` (`crates/wire/src/sync.rs`), pull only: a digest of
// nothing, so the member answers with every record it may share of the collection; we send
// back no records. Records are opaque here; `records.ts` reads and verifies them.

import { admitted } from '../wire/admission.js'
import { MalformedError } from '../wire/cbor.js'
import type { FramedStream } from '../wire/framed.js'
import { bytesItem, list, object, tag } from '../wire/shape.js'

export const MAX_FRAME = 4 * 1024 * 1024
export const MAX_ENTRIES = 16 * 1024
/** Largest record of any collection we read (a member record is at most 4096 bytes). */
const MAX_RECORD = 80 * 1024

/** Every record the member holds of `collection`, as encoded bytes. */
export async function pull (stream: FramedStream, collection: string): Promise<Uint8Array[]> {
  try {
    await stream.write({ type: 'digest', collection, entries: [] }, MAX_FRAME)
    await admitted(stream)
    const value = await stream.read(MAX_FRAME)
    if (value === null) throw new MalformedError('the member closed the stream without a delta')
    const f = object(value, 'sync message')
    if (tag(f) !== 'delta') throw new MalformedError('expected a delta')
    const records = list(f, 'records', MAX_ENTRIES, bytesItem(MAX_RECORD))
    // The exchange ends with the records it wants of us: it wants none of an empty digest.
    await stream.write({ type: 'records', records: [] }, MAX_FRAME)
    return records
  } finally {
    await stream.close().catch(() => {})
  }
}
