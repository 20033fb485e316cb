// The mobile key bar: what each key sends to the terminal, and the sticky Ctrl modifier that
// applies to the next key typed.

export type BarKey = 'esc' | 'tab' | 'left' | 'up' | 'down' | 'right' | 'ctrl-c'

const SEQUENCES: Record<BarKey, string> = {
  esc: '\x1b',
  tab: '\t',
  up: '\x1b[A',
  down: '\x1b[B',
  right: '\x1b[C',
  left: '\x1b[D',
  'ctrl-c': '\x03'
}

export function isBarKey (name: string): name is BarKey {
  return Object.hasOwn(SEQUENCES, name)
}

export function barKey (key: BarKey): string {
  return SEQUENCES[key]
}

/**
 * The input with Ctrl applied to its first character, as a terminal sends it: a letter
 * becomes its control code (Ctrl-A is 0x01), and @[\]^_ and ? map as usual.
 */
export function withCtrl (data: string): string {
  const first = data[0]
  if (first === undefined) return data
  const code = first.toUpperCase().charCodeAt(0)
  if (code >= 0x40 && code <= 0x5f) return String.fromCharCode(code - 0x40) + data.slice(1)
  if (first === '?') return '\x7f' + data.slice(1)
  if (first === ' ') return '\x00' + data.slice(1)
  return data
}

/** The pairing code in the page's fragment (`#code=…`), which is never sent to a server. */
export function codeFromFragment (hash: string): string | null {
  const params = new URLSearchParams(hash.startsWith('#') ? hash.slice(1) : hash)
  const code = params.get('code')
  return code === null || code.trim() === '' ? null : code
}
