// What a pairing code does on the page. A code from a link's fragment only fills the pair
// form: any page holding a reference to this window (it opened it) can set the fragment, so
// pairing starts only on the user's tap, with the device it leads to shown beside the button.

import { describe, usableCode } from '../net/mesh.js'
import { peerIdText } from '../replica/peer-id.js'

export type PairPreview =
  | { ok: true, peerId: string, text: string }
  | { ok: false, text: string }

/** The device a tap on Pair would pair with for `input` at `nowMs`, or why there is none. */
export function pairPreview (input: string, nowMs: number): PairPreview {
  if (input.trim() === '') return { ok: false, text: '' }
  try {
    const code = usableCode(input, nowMs)
    const peerId = peerIdText(code.inviter)
    const minutes = Math.max(1, Math.ceil((Number(code.expires) * 1000 - nowMs) / 60_000))
    return { ok: true, peerId, text: `Pairs with the device ${peerId} (the code expires in ${minutes} min).` }
  } catch (error) {
    return { ok: false, text: describe(error) }
  }
}
