// Checks on decoded CBOR from a peer: every field read through these is of the type the
// Rust side declares, or the message is refused as malformed. Nothing a peer sends is
// trusted to have the shape TypeScript's types claim.

import { MalformedError } from './cbor.js'

export type Fields = Record<string, unknown>

export function object (value: unknown, what: string): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    throw new MalformedError(`${what}: expected a map`)
  }
  return value as Fields
}

export function text (fields: Fields, key: string, maxLen = 64 * 1024): string {
  const value = fields[key]
  if (typeof value !== 'string') throw new MalformedError(`${key}: expected text`)
  if (value.length > maxLen) throw new MalformedError(`${key}: too long`)
  return value
}

export function bytes (fields: Fields, key: string, maxLen = Number.MAX_SAFE_INTEGER): Uint8Array {
  const value = fields[key]
  if (!(value instanceof Uint8Array)) throw new MalformedError(`${key}: expected bytes`)
  if (value.length > maxLen) throw new MalformedError(`${key}: too long`)
  return value
}

/** An unsigned integer within `max` (and within JavaScript's exact integers). */
export function uint (fields: Fields, key: string, max = Number.MAX_SAFE_INTEGER): number {
  return uintValue(fields[key], key, max)
}

export function uintValue (value: unknown, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new MalformedError(`${what}: expected an unsigned integer up to ${max}`)
  }
  return value
}

export function int (fields: Fields, key: string): number {
  const value = fields[key]
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new MalformedError(`${key}: expected an integer`)
  }
  return value
}

export function bool (fields: Fields, key: string): boolean {
  const value = fields[key]
  if (typeof value !== 'boolean') throw new MalformedError(`${key}: expected a boolean`)
  return value
}

/** A field serde writes as `null` for `None`; absent counts as `None` too. */
export function optional<T> (fields: Fields, key: string, read: (f: Fields, k: string) => T): T | null {
  const value = fields[key]
  return value === null || value === undefined ? null : read(fields, key)
}

export function list<T> (fields: Fields, key: string, maxItems: number, item: (value: unknown, what: string) => T): T[] {
  const value = fields[key]
  if (!Array.isArray(value)) throw new MalformedError(`${key}: expected a list`)
  if (value.length > maxItems) throw new MalformedError(`${key}: too many items`)
  return value.map((v, i) => item(v, `${key}[${i}]`))
}

export function textItem (maxLen: number) {
  return (value: unknown, what: string): string => {
    if (typeof value !== 'string' || value.length > maxLen) throw new MalformedError(`${what}: expected text`)
    return value
  }
}

export function bytesItem (maxLen: number) {
  return (value: unknown, what: string): Uint8Array => {
    if (!(value instanceof Uint8Array) || value.length > maxLen) throw new MalformedError(`${what}: expected bytes`)
    return value
  }
}

/** The `type` (or other) tag of a serde internally tagged enum. */
export function tag (fields: Fields, key = 'type'): string {
  return text(fields, key, 64)
}
