// CBOR as the Rust side writes it (ciborium through serde): maps keep the order their fields
// are given in, integers are minimal, bytes are byte strings. Keeping serde's field order
// makes our frames byte-for-byte what Rust would write (the shared vectors check it).

import { decode, encode } from 'cborg'

/** Nesting accepted when decoding, as in `crates/wire/src/frame.rs`. */
export const RECURSION_LIMIT = 32

// Sorting nothing keeps insertion order (Array.prototype.sort is stable).
const keepOrder = (): number => 0

export function encodeCbor (value: unknown): Uint8Array {
  return encode(value, { mapSorter: keepOrder })
}

/** A body that is not the message it should be. */
export class MalformedError extends Error {
  constructor (message: string) {
    super(`malformed message: ${message}`)
    this.name = 'MalformedError'
  }
}

/**
 * Decodes exactly one CBOR item. Nesting is bounded before decoding, so a crafted deeply
 * nested item is refused rather than exhausting the stack.
 */
export function decodeCbor (body: Uint8Array): unknown {
  checkDepth(body, RECURSION_LIMIT)
  try {
    // cborg refuses trailing bytes after the item, as ciborium's reader does here.
    return decode(body, { allowUndefined: false, useMaps: false, rejectDuplicateMapKeys: true })
  } catch (e) {
    throw new MalformedError(e instanceof Error ? e.message : String(e))
  }
}

/**
 * Walks the item's heads without building anything, refusing nesting deeper than `limit`
 * (and truncated heads). Lengths are checked against the bytes left, never allocated.
 */
function checkDepth (bytes: Uint8Array, limit: number): void {
  // Items still to read at each open level; `Infinity` for indefinite-length containers.
  const pending: number[] = [1]
  let at = 0
  while (pending.length > 0) {
    const top = pending.length - 1
    if (pending[top] === 0) { pending.pop(); continue }
    if (at >= bytes.length) throw new MalformedError('truncated')
    const initial = bytes[at++] as number
    if (initial === 0xff) {
      if (pending[top] !== Infinity) throw new MalformedError('unexpected break')
      pending.pop()
      continue
    }
    pending[top] = (pending[top] as number) - 1
    const major = initial >> 5
    const info = initial & 0x1f
    let arg = 0
    let indefinite = false
    if (info < 24) arg = info
    else if (info <= 27) {
      const size = 1 << (info - 24)
      if (at + size > bytes.length) throw new MalformedError('truncated')
      for (let i = 0; i < size; i++) arg = arg * 256 + (bytes[at + i] as number)
      at += size
    } else if (info === 31 && major >= 2 && major <= 5) indefinite = true
    else if (!(major === 7 && info === 31)) throw new MalformedError('reserved additional info')
    switch (major) {
      case 2: case 3:
        if (indefinite) pending.push(Infinity)
        else {
          if (arg > bytes.length - at) throw new MalformedError('truncated')
          at += arg
        }
        break
      case 4: case 5: {
        const items = indefinite ? Infinity : (major === 5 ? arg * 2 : arg)
        if (!indefinite && items > bytes.length - at) throw new MalformedError('truncated')
        pending.push(items)
        if (pending.length - 1 > limit) throw new MalformedError('nested too deeply')
        break
      }
      case 6:
        pending.push(1)
        if (pending.length - 1 > limit) throw new MalformedError('nested too deeply')
        break
      default:
        break
    }
  }
}
