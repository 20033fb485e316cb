// RFC 4648 base32 without padding, strict as Rust's `data_encoding::BASE32_NOPAD`: upper-case
// alphabet only, no lengths that cannot come from whole bytes, unused trailing bits zero.

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

export function encodeBase32 (bytes: Uint8Array): string {
  let out = ''
  let acc = 0
  let bits = 0
  for (const byte of bytes) {
    acc = (acc << 8) | byte
    bits += 8
    while (bits >= 5) {
      bits -= 5
      out += ALPHABET[(acc >> bits) & 31]
    }
    acc &= (1 << bits) - 1
  }
  if (bits > 0) out += ALPHABET[(acc << (5 - bits)) & 31]
  return out
}

/** The bytes, or `null` for text that is not canonical base32. */
export function decodeBase32 (text: string): Uint8Array | null {
  // 1, 3 or 6 characters past a whole block of 8 encode no whole byte.
  if ([1, 3, 6].includes(text.length % 8)) return null
  const out = new Uint8Array(Math.floor(text.length * 5 / 8))
  let acc = 0
  let bits = 0
  let at = 0
  for (const char of text) {
    const value = ALPHABET.indexOf(char)
    if (value < 0) return null
    acc = (acc << 5) | value
    bits += 5
    if (bits >= 8) {
      bits -= 8
      out[at++] = (acc >> bits) & 0xff
    }
    acc &= (1 << bits) - 1
  }
  return acc === 0 ? out : null
}
