// The attached session's terminal: xterm.js with its default DOM renderer (so the element's
// text is the screen, which the browser tests read), the key bar, and the size policy: the
// phone does not resize the desktop's session unless asked (0 × 0 keeps the host's size).

import { FitAddon } from '@xterm/addon-fit'
import { Terminal } from '@xterm/xterm'
import type { Screen } from '../session/client.js'
import { barKey, isBarKey, withCtrl } from './keys.js'

const automation = globalThis as { loopsyTerminal?: Terminal }

export class SessionTerminal {
  readonly term: Terminal
  private readonly fit = new FitAddon()
  private ctrl = false
  private readonly encoder = new TextEncoder()

  constructor (
    container: HTMLElement,
    private readonly keybar: HTMLElement,
    private readonly send: (data: Uint8Array) => void
  ) {
    // A steady cursor: xterm blinks it with a CSS animation, which keeps the page drawing frames,
    // and Chrome defers every task after a keystroke until the next frame while one is pending
    // (DeferRendererTasksAfterInput), so the echo waited a frame to arrive and another to show.
    this.term = new Terminal({ convertEol: false, scrollback: 5000, fontSize: 14, cursorBlink: false })
    this.term.loadAddon(this.fit)
    this.term.open(container)
    this.term.onData(data => { this.type(data) })
    // For the test driver and the benchmark (docs/web.md, automation surface): the terminal
    // whose buffer they read once a write is parsed, before it is drawn. It gives a script in
    // the page nothing it does not already have (the screen, the keys it could type).
    automation.loopsyTerminal = this.term
    keybar.addEventListener('click', this.onBar)
  }

  /** What the session client draws into. */
  readonly screen: Screen = {
    redraw: (screen, rows, cols) => {
      this.term.reset()
      if (rows > 0 && cols > 0) this.term.resize(cols, rows)
      this.term.write(screen)
    },
    output: (data) => { this.term.write(data) }
  }

  /** The size that fits the element, for a session this phone may resize. */
  fittingSize (): { rows: number, cols: number } {
    const size = this.fit.proposeDimensions()
    return size === undefined ? { rows: 0, cols: 0 } : { rows: size.rows, cols: size.cols }
  }

  dispose (): void {
    this.keybar.removeEventListener('click', this.onBar)
    if (automation.loopsyTerminal === this.term) delete automation.loopsyTerminal
    this.term.dispose()
  }

  private type (data: string): void {
    if (this.ctrl) {
      data = withCtrl(data)
      this.setCtrl(false)
    }
    this.send(this.encoder.encode(data))
  }

  private readonly onBar = (event: Event): void => {
    const button = (event.target as HTMLElement).closest('button')
    const key = button?.dataset.key
    if (key === undefined) return
    if (key === 'ctrl') this.setCtrl(!this.ctrl)
    else if (isBarKey(key)) this.send(this.encoder.encode(barKey(key)))
    this.term.focus()
  }

  private setCtrl (on: boolean): void {
    this.ctrl = on
    this.keybar.querySelector('[data-key="ctrl"]')?.setAttribute('aria-pressed', String(on))
  }
}
