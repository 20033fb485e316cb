import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { HostedSession } from '../src/replica/records.js'
import { Attention, BASE_TITLE, type Platform, VIBRATION, badgeText, canAskForNotifications, pageTitle } from '../src/ui/attention.js'
import { type Info, type Waiting, infoValue, readInfo, requestValue } from '../src/session/messages.js'
import { Attachment } from '../src/session/client.js'
import { framedPair } from './helpers.js'
import { MAX_FRAME } from '../src/session/messages.js'

const base: Info = {
  id: 'k3j2', name: 'agent', command: ['claude'], status: { state: 'running' }, created: 1, lastActivity: 2, clients: 0, waiting: null
}
const host = new Uint8Array([1, 2, 3])

function session (id: string, waiting: Waiting | null): HostedSession {
  return { host, info: { ...base, id, name: id, waiting } }
}

/** A platform that records what the page did with it. */
function fake (permission: NotificationPermission, secure = true) {
  const did = { titles: [] as string[], buzzes: [] as number[][], shown: [] as string[][], asked: 0 }
  let granted = permission
  const platform: Platform = {
    secure,
    vibrate: pattern => { did.buzzes.push(pattern); return true },
    notifications: {
      permission: () => granted,
      request: async () => { did.asked++; granted = 'granted'; return granted },
      show: (title, body, tag) => { did.shown.push([title, body, tag]) }
    },
    setTitle: title => { did.titles.push(title) }
  }
  return { platform, did }
}

const bell = (sinceMs: number, text: string | null = null): Waiting => ({ sinceMs, kind: 'bell', text })

test('the title counts the waiting sessions', () => {
  assert.equal(pageTitle(0), BASE_TITLE)
  assert.equal(pageTitle(2), `(2) ${BASE_TITLE}`)
  const { platform, did } = fake('default')
  const attention = new Attention(platform)
  attention.update([session('a', bell(1)), session('b', null), session('c', bell(2))], () => 'desk')
  assert.deepEqual(did.titles, ['(2) Loopsy'])
})

test('a session that starts waiting buzzes and notifies once; those waiting at the first look do not', () => {
  const { platform, did } = fake('granted')
  const attention = new Attention(platform)
  attention.update([session('a', bell(1))], () => 'desk')
  assert.equal(did.buzzes.length, 0, 'it waited before the page looked')
  assert.equal(did.shown.length, 0)
  attention.update([session('a', bell(1)), session('b', { sinceMs: 5, kind: 'notify', text: 'approve?' })], () => 'desk')
  assert.deepEqual(did.buzzes, [VIBRATION])
  assert.deepEqual(did.shown, [['b on desk', 'waiting · asks: approve?', 'loopsy-b']])
  // The same wait seen again is not news; answered, then waiting again, is.
  attention.update([session('a', bell(1)), session('b', { sinceMs: 5, kind: 'notify', text: 'approve?' })], () => 'desk')
  attention.update([session('a', bell(1)), session('b', null)], () => 'desk')
  attention.update([session('a', bell(1)), session('b', bell(9))], () => 'desk')
  assert.equal(did.buzzes.length, 2)
  assert.equal(did.shown.length, 2)
  assert.deepEqual(did.titles.at(-1), '(2) Loopsy')
})

test('no notification without permission or outside a secure context, and asking needs both', async () => {
  const refused = fake('denied')
  const a = new Attention(refused.platform)
  a.update([], () => 'desk')
  a.update([session('a', bell(1))], () => 'desk')
  assert.equal(refused.did.buzzes.length, 1, 'the vibration needs no permission')
  assert.equal(refused.did.shown.length, 0)
  assert.equal(canAskForNotifications(refused.platform), false, 'a refusal is not asked again')

  const insecure = fake('granted', false)
  const b = new Attention(insecure.platform)
  b.update([], () => 'desk')
  b.update([session('a', bell(1))], () => 'desk')
  assert.equal(insecure.did.shown.length, 0)
  assert.equal(await b.ask(), false)
  assert.equal(canAskForNotifications(fake('default', false).platform), false)

  const fresh = fake('default')
  assert.equal(canAskForNotifications(fresh.platform), true)
  assert.equal(await new Attention(fresh.platform).ask(), true)
  assert.equal(fresh.did.asked, 1)
})

test('a page without vibration or notifications still counts', () => {
  const titles: string[] = []
  const attention = new Attention({ secure: true, setTitle: t => { titles.push(t) } })
  attention.update([], () => 'desk')
  attention.update([session('a', bell(1))], () => 'desk')
  assert.deepEqual(titles, ['Loopsy', '(1) Loopsy'])
})

test('badges say why a session waits', () => {
  assert.equal(badgeText(bell(1)), 'waiting · bell')
  assert.equal(badgeText({ sinceMs: 1, kind: 'exit', text: 'exited with code 0' }), 'waiting · ended: exited with code 0')
})

test('an info with its waiting state reads back as the host writes it', () => {
  const waiting: Info = { ...base, waiting: { sinceMs: 1764000000123, kind: 'note', text: 'Claude needs you' } }
  assert.deepEqual(readInfo(infoValue(waiting)), waiting)
  assert.deepEqual(readInfo(infoValue(base)), base)
  assert.equal('waiting' in infoValue(base), false, 'absent, as serde skips None')
  assert.throws(() => readInfo({ ...infoValue(base), waiting: { since_ms: 1, kind: 'rm -rf' } }))
})

test('a read-only attach says so, and sends no keys and no sizes', async () => {
  assert.equal('read_only' in requestValue({ op: 'attach', session: 's', offset: null, rows: 1, cols: 1 }), false)
  const [client, server] = framedPair()
  const seen: unknown[] = []
  void (async () => {
    await server.write({ type: 'accepted' }, 4096)
    for (;;) {
      const value = await server.read(MAX_FRAME)
      if (value === null) return
      seen.push(value)
      if (seen.length === 1) {
        await server.write({ type: 'attached', info: infoValue(base), offset: 0, screen: new Uint8Array(), rows: 24, cols: 80 }, MAX_FRAME)
      }
    }
  })()
  const attachment = new Attachment(async () => client, {
    session: 'k3j2', rows: 24, cols: 80, readOnly: true, screen: { redraw: () => {}, output: () => {} }
  })
  const running = attachment.run()
  while (attachment.offset === null) await new Promise(resolve => setTimeout(resolve, 5))
  await attachment.keys(new Uint8Array([0x61]))
  await attachment.resize(50, 100)
  await new Promise(resolve => setTimeout(resolve, 20))
  await attachment.detach()
  await running
  assert.equal(seen.length, 1, 'only the attach request')
  assert.deepEqual(seen[0], { op: 'attach', session: 'k3j2', offset: null, rows: 0, cols: 0, read_only: true })
})
