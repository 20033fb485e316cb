import assert from 'node:assert/strict'
import { test } from 'node:test'
import { utf8 } from '../src/bytes.js'
import { Attachment, SessionError, listSessions } from '../src/session/client.js'
import { type Info, MAX_FRAME, infoValue } from '../src/session/messages.js'
import type { FramedStream } from '../src/wire/framed.js'
import { framedPair } from './helpers.js'

const info: Info = {
  id: 'k3j2', name: 'agent', command: [], status: { state: 'running' }, created: 1, lastActivity: 2, clients: 1, waiting: null
}

/** A host that answers each stream it is given with `serve`; the client opens through it. */
function host (serve: (stream: FramedStream, request: any, n: number) => Promise<void>) {
  const requests: any[] = []
  const open = async (): Promise<FramedStream> => {
    const [client, server] = framedPair()
    void (async () => {
      await server.write({ type: 'accepted' }, 4096)
      const request = await server.read(MAX_FRAME)
      requests.push(request)
      await serve(server, request, requests.length)
    })()
    return client
  }
  return { open, requests }
}

function recorder () {
  const shown: string[] = []
  return {
    shown,
    screen: {
      redraw: (screen: Uint8Array) => { shown.push(`[redraw]${new TextDecoder().decode(screen)}`) },
      output: (data: Uint8Array) => { shown.push(new TextDecoder().decode(data)) }
    }
  }
}

const output = (offset: number, text: string) => ({ type: 'output', offset, data: utf8(text) })

test('attach shows the screen, then the output, then how it ended', async () => {
  const { open, requests } = host(async (s) => {
    await s.write({ type: 'attached', info: infoValue(info), offset: 10, screen: utf8('$ '), rows: 24, cols: 80 }, MAX_FRAME)
    await s.write(output(10, 'web-42\r\n'), MAX_FRAME)
    await s.write({ type: 'exited', code: 0 }, MAX_FRAME)
  })
  const { shown, screen } = recorder()
  const attachment = new Attachment(open, { session: 'agent', rows: 30, cols: 90, screen })
  assert.deepEqual(await attachment.run(), { why: 'exited', code: 0 })
  assert.deepEqual(requests[0], { op: 'attach', session: 'agent', offset: null, rows: 30, cols: 90 })
  assert.deepEqual(shown, ['[redraw]$ ', 'web-42\r\n'])
  assert.equal(attachment.offset, 18)
})

test('after a lost stream, resuming from the offset loses nothing and repeats nothing', async () => {
  const { open, requests } = host(async (s, _request, n) => {
    if (n === 1) {
      await s.write({ type: 'attached', info: infoValue(info), offset: 0, screen: utf8(''), rows: 24, cols: 80 }, MAX_FRAME)
      await s.write(output(0, '1\r\n2\r\n'), MAX_FRAME)
      // The connection goes (the phone changed networks) before the session ends.
      await s.close()
      return
    }
    // The host resends from a little before the offset asked for: the overlap is dropped.
    await s.write({ type: 'attached', info: infoValue(info), offset: 6, screen: null, rows: 24, cols: 80 }, MAX_FRAME)
    await s.write(output(3, '2\r\n3\r\n'), MAX_FRAME)
    await s.write(output(9, '4\r\n'), MAX_FRAME)
    await s.write({ type: 'exited', code: null }, MAX_FRAME)
  })
  const { shown, screen } = recorder()
  const attachment = new Attachment(open, { session: 'counter', rows: 24, cols: 80, screen })
  const first = await attachment.run()
  assert.equal(first.why, 'lost')
  assert.deepEqual(await attachment.run(), { why: 'exited', code: null })
  assert.equal(requests[1].offset, 6)
  assert.equal(shown.slice(1).join(''), '1\r\n2\r\n3\r\n4\r\n')
})

test('output that skips bytes is refused, not shown', async () => {
  const { open } = host(async (s) => {
    await s.write({ type: 'attached', info: infoValue(info), offset: 0, screen: utf8(''), rows: 24, cols: 80 }, MAX_FRAME)
    await s.write(output(5, 'late'), MAX_FRAME)
  })
  const { shown, screen } = recorder()
  await assert.rejects(new Attachment(open, { session: 'x', rows: 24, cols: 80, screen }).run(), SessionError)
  assert.deepEqual(shown, ['[redraw]'])
})

test('keys and sizes reach the host while attached; detach ends it', async () => {
  const inputs: unknown[] = []
  let attachedNow!: () => void
  const ready = new Promise<void>(resolve => { attachedNow = resolve })
  const { open } = host(async (s) => {
    await s.write({ type: 'attached', info: infoValue(info), offset: 0, screen: utf8(''), rows: 24, cols: 80 }, MAX_FRAME)
    attachedNow()
    for (;;) {
      const input = await s.read(MAX_FRAME).catch(() => null)
      if (input === null) return
      inputs.push(input)
    }
  })
  const { screen } = recorder()
  const attachment = new Attachment(open, { session: 'x', rows: 24, cols: 80, screen })
  const running = attachment.run()
  await ready
  await attachment.keys(utf8('\x03'))
  await attachment.resize(5000, 100)
  await attachment.detach()
  assert.deepEqual(await running, { why: 'detached' })
  assert.deepEqual(inputs, [{ type: 'keys', data: utf8('\x03') }, { type: 'resize', rows: 500, cols: 100 }])
})

test('a refusal by the gate is told with its reason', async () => {
  const open = async (): Promise<FramedStream> => {
    const [client, server] = framedPair()
    void server.write({ type: 'refused', reason: 'not paired with this device' }, 4096).then(async () => server.close())
    return client
  }
  await assert.rejects(listSessions(open), /not paired with this device/)
})

test('a host\'s oversized terminal is cut to the session limits before the terminal sees it', async () => {
  const sizes: Array<[number, number]> = []
  const { open } = host(async (s) => {
    await s.write({ type: 'attached', info: infoValue(info), offset: 0, screen: utf8(''), rows: 65535, cols: 65535 }, MAX_FRAME)
    await s.write({ type: 'exited', code: 0 }, MAX_FRAME)
  })
  const screen = { redraw: (_: Uint8Array, rows: number, cols: number) => { sizes.push([rows, cols]) }, output: () => {} }
  await new Attachment(open, { session: 'x', rows: 0, cols: 0, screen }).run()
  assert.deepEqual(sizes, [[500, 1000]])
})

test('a host that resumes elsewhere than asked, or attaches with no screen, is refused', async () => {
  // Resuming at 9 after output up to 6 would skip three bytes without a word.
  const { open } = host(async (s, _request, n) => {
    if (n === 1) {
      await s.write({ type: 'attached', info: infoValue(info), offset: 0, screen: utf8(''), rows: 24, cols: 80 }, MAX_FRAME)
      await s.write(output(0, '1\r\n2\r\n'), MAX_FRAME)
      await s.close()
      return
    }
    await s.write({ type: 'attached', info: infoValue(info), offset: 9, screen: null, rows: 24, cols: 80 }, MAX_FRAME)
    await s.write(output(9, '4\r\n'), MAX_FRAME)
  })
  const { shown, screen } = recorder()
  const attachment = new Attachment(open, { session: 'x', rows: 24, cols: 80, screen })
  assert.equal((await attachment.run()).why, 'lost')
  await assert.rejects(attachment.run(), /another offset/)
  assert.equal(shown.join(''), '[redraw]1\r\n2\r\n')

  const fresh = host(async (s) => {
    await s.write({ type: 'attached', info: infoValue(info), offset: 4, screen: null, rows: 24, cols: 80 }, MAX_FRAME)
    await s.write(output(4, 'tail'), MAX_FRAME)
  })
  const second = recorder()
  await assert.rejects(new Attachment(fresh.open, { session: 'x', rows: 24, cols: 80, screen: second.screen }).run(), SessionError)
  assert.deepEqual(second.shown, [])
})

test('attaching where the gate refuses ends with its reason rather than as a lost connection', async () => {
  // Told as "lost", the page would attach again and again, never saying why.
  const open = async (): Promise<FramedStream> => {
    const [client, server] = framedPair()
    void server.write({ type: 'refused', reason: 'no session grant' }, 4096).then(async () => server.close())
    return client
  }
  const { screen } = recorder()
  await assert.rejects(new Attachment(open, { session: 'x', rows: 24, cols: 80, screen }).run(), /no session grant/)
})
