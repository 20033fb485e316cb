// A headless Chromium that the Rust tests (tests/src/browser.rs) and the benchmark drive: one
// JSON command per line on stdin, one JSON answer per line on stdout, in order. It exits when
// stdin closes, so it never outlives the test that started it.
//
// Every command has `cmd` and, except `open`'s options, names a `page` opened before:
//   {"cmd":"open","page":"p","url":U,"width":412,"height":915}  a new profile (storage of its own)
//   {"cmd":"goto","page":"p","url":U}
//   {"cmd":"reload","page":"p"}
//   {"cmd":"viewport","page":"p","width":390,"height":844}
//   {"cmd":"click","page":"p","testid":T,"text":S?}    the first T whose text contains S
//   {"cmd":"fill","page":"p","testid":T,"value":S}     an input's value
//   {"cmd":"type","page":"p","text":S}                 keys into the focused element
//   {"cmd":"press","page":"p","key":"Enter"}
//   {"cmd":"texts","page":"p","testid":T,"within":CSS?} the text of every T (or of CSS inside it)
//   {"cmd":"wait_text","page":"p","testid":T,"text":S,"within":CSS?,"timeout_ms":N}
//   {"cmd":"timed","page":"p","event":"click"|"keydown","action":{click|press|type command},
//    "testid":T,"text":S,"within":CSS?,"timeout_ms":N}  ms from the event in the page to S shown
//   {"cmd":"timed_parsed","page":"p","event":"keydown","action":{...},"text":S,"timeout_ms":N}
//                                 ms from the event to S in the attached terminal's buffer, as
//                                 soon as xterm has parsed the write (before it draws it)
//   {"cmd":"screenshot","page":"p","path":P}
//   {"cmd":"eval","page":"p","js":EXPR}                EXPR's value (awaited), as JSON
//   {"cmd":"close","page":"p"}
// Answers: {"ok":true,"value":...} or {"ok":false,"error":"..."}. Texts are matched after
// turning non-breaking spaces (xterm's DOM renderer writes them) into spaces.

import { createInterface } from 'node:readline'
import { chromium } from 'playwright-core'

const executablePath = process.env.LOOPSY_CHROMIUM ?? '/usr/bin/chromium'
const args = ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu']
// A test's own TLS certificate, trusted by its public key's hash, and no other one.
if (process.env.LOOPSY_BROWSER_TRUST_SPKI) {
  args.push(`--ignore-certificate-errors-spki-list=${process.env.LOOPSY_BROWSER_TRUST_SPKI}`)
}
// Pages, by the name the test gave them; each in a context of its own (a fresh profile).
const pages = new Map()
let browser

async function launch () {
  browser ??= await chromium.launch({ executablePath, headless: true, args })
  return browser
}

function page (name) {
  const found = pages.get(name)
  if (found === undefined) throw new Error(`no page named ${JSON.stringify(name)}: open it first`)
  return found
}

function locator (p, testid, text) {
  const all = p.getByTestId(testid)
  return text === undefined ? all.first() : all.filter({ hasText: text }).first()
}

// In the page: the text of every element with the test ID (or of `within` inside each).
function readTexts ({ testid, within }) {
  const clean = s => s.replace(/\u00a0/g, ' ')
  const out = []
  for (const element of document.querySelectorAll(`[data-testid="${testid}"]`)) {
    const targets = within === undefined ? [element] : [...element.querySelectorAll(within)]
    for (const t of targets) out.push(clean(t.innerText ?? t.textContent ?? ''))
  }
  return out
}

// In the page: resolves when some element with the test ID holds `text`, with the time
// (performance.now()) it was first seen; watched by a MutationObserver, so the time is that
// of the DOM change, not of a polling tick. With `event`, also the time of the first such
// event after this was installed (captured on the document before anything else sees it).
function watch ({ testid, text, within, event, timeoutMs }) {
  const clean = s => s.replace(/\u00a0/g, ' ')
  const holds = () => {
    for (const element of document.querySelectorAll(`[data-testid="${testid}"]`)) {
      const targets = within === undefined ? [element] : [...element.querySelectorAll(within)]
      for (const t of targets) if (clean(t.innerText ?? t.textContent ?? '').includes(text)) return true
    }
    return false
  }
  let started = null
  if (event !== undefined) {
    document.addEventListener(event, () => { started ??= performance.now() }, { capture: true, once: true })
  }
  window.__loopsyWatch = new Promise((resolve, reject) => {
    const done = () => { observer.disconnect(); clearTimeout(timer); resolve({ seen: performance.now(), started }) }
    const observer = new MutationObserver(() => { if (holds()) done() })
    const timer = setTimeout(() => {
      observer.disconnect()
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${JSON.stringify(text)} in [data-testid=${testid}]`))
    }, timeoutMs)
    observer.observe(document, { subtree: true, childList: true, characterData: true, attributes: true })
    if (holds()) done()
  })
}

// In the page: as `watch`, but resolves when the attached terminal's buffer (the visible
// rows) holds `text`, checked each time xterm has parsed a write, before it draws it.
function watchParsed ({ text, event, timeoutMs }) {
  const term = window.loopsyTerminal
  if (term === undefined) throw new Error('no terminal is attached')
  const holds = () => {
    const buffer = term.buffer.active
    for (let y = buffer.viewportY; y < buffer.viewportY + term.rows; y++) {
      if (buffer.getLine(y)?.translateToString(true).includes(text)) return true
    }
    return false
  }
  let started = null
  document.addEventListener(event, () => { started ??= performance.now() }, { capture: true, once: true })
  window.__loopsyWatch = new Promise((resolve, reject) => {
    const done = () => { parsed.dispose(); clearTimeout(timer); resolve({ seen: performance.now(), started }) }
    const parsed = term.onWriteParsed(() => { if (holds()) done() })
    const timer = setTimeout(() => {
      parsed.dispose()
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${JSON.stringify(text)} in the terminal's buffer`))
    }, timeoutMs)
    if (holds()) done()
  })
}

async function waitText (p, { testid, text, within, timeout_ms: timeoutMs = 20_000 }) {
  await p.evaluate(watch, { testid, text, within, timeoutMs })
  await p.evaluate(() => window.__loopsyWatch)
  return await p.evaluate(readTexts, { testid, within })
}

async function act (p, action) {
  switch (action.cmd) {
    case 'click': await locator(p, action.testid, action.text).click(); return
    case 'press': await p.keyboard.press(action.key); return
    case 'type': await p.keyboard.type(action.text); return
    default: throw new Error(`cannot time ${JSON.stringify(action.cmd)}`)
  }
}

// Chromium abandons a navigation when its network changes under it, as it does for a
// moment after a lab's namespace gets its addresses; a person would load the page again.
async function navigate (p, url) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await p.goto(url)
    } catch (e) {
      if (attempt === 3 || !String(e?.message).includes('net::ERR_NETWORK_CHANGED')) throw e
    }
  }
}

const commands = {
  async open ({ page: name, url, width = 412, height = 915 }) {
    if (pages.has(name)) throw new Error(`page ${JSON.stringify(name)} is open already`)
    const context = await (await launch()).newContext({ viewport: { width, height }, deviceScaleFactor: 1 })
    const p = await context.newPage()
    pages.set(name, p)
    if (url !== undefined) await navigate(p, url)
    return p.url()
  },
  async goto ({ page: name, url }) { await navigate(page(name), url); return page(name).url() },
  async reload ({ page: name }) { await page(name).reload(); return page(name).url() },
  async viewport ({ page: name, width, height }) { await page(name).setViewportSize({ width, height }); return null },
  async click ({ page: name, testid, text }) { await locator(page(name), testid, text).click(); return null },
  async fill ({ page: name, testid, value }) { await locator(page(name), testid).fill(value); return null },
  async type ({ page: name, text }) { await page(name).keyboard.type(text); return null },
  async press ({ page: name, key }) { await page(name).keyboard.press(key); return null },
  async texts ({ page: name, testid, within }) { return await page(name).evaluate(readTexts, { testid, within }) },
  async wait_text (command) { return await waitText(page(command.page), command) },
  async timed ({ page: name, event, action, testid, text, within, timeout_ms: timeoutMs = 20_000 }) {
    const p = page(name)
    await p.evaluate(watch, { testid, text, within, event, timeoutMs })
    await act(p, action)
    const { seen, started } = await p.evaluate(() => window.__loopsyWatch)
    if (started === null) throw new Error(`no ${event} event reached the page`)
    return seen - started
  },
  async timed_parsed ({ page: name, event, action, text, timeout_ms: timeoutMs = 20_000 }) {
    const p = page(name)
    await p.evaluate(watchParsed, { text, event, timeoutMs })
    await act(p, action)
    const { seen, started } = await p.evaluate(() => window.__loopsyWatch)
    if (started === null) throw new Error(`no ${event} event reached the page`)
    return seen - started
  },
  async screenshot ({ page: name, path }) { await page(name).screenshot({ path, fullPage: false }); return path },
  async eval ({ page: name, js }) { return await page(name).evaluate(js) },
  async close ({ page: name }) {
    const p = page(name)
    pages.delete(name)
    await p.context().close()
    return null
  }
}

function answer (value) { process.stdout.write(JSON.stringify(value) + '\n') }

async function run (line) {
  let command
  try {
    command = JSON.parse(line)
  } catch {
    return { ok: false, error: 'not a JSON line' }
  }
  const handler = Object.hasOwn(commands, command?.cmd) ? commands[command.cmd] : undefined
  if (handler === undefined) return { ok: false, error: `unknown command ${JSON.stringify(command?.cmd)}` }
  try {
    return { ok: true, value: (await handler(command)) ?? null }
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) }
  }
}

async function main () {
  // Commands run one at a time, in order: the answers come in the order asked.
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === '') continue
    answer(await run(line))
  }
  await browser?.close().catch(() => {})
  process.exit(0)
}

main().catch(error => {
  process.stderr.write(`driver: ${error?.stack ?? error}\n`)
  process.exit(1)
})
