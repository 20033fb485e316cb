import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fromHex } from '../src/bytes.js'
import { codeFromText } from '../src/pair/code.js'
import { PairError, join } from '../src/pair/join.js'
import { framedPair, inviter, vectors } from './helpers.js'

const v = vectors('pair.json')
const code = codeFromText(v.code.text)
const me = fromHex(v.joiner)
const desktop = { name: 'desktop', grants: ['sessions'], addrs: [] }
const phone = { name: 'phone', grants: [], addrs: [] }

test('joining pairs both sides with the same check code and each other\'s hello', async () => {
  const [a, b] = framedPair()
  const [joined, invited] = await Promise.all([
    join(a, { code, me, hello: phone }),
    inviter(b, { code, joinerId: me, hello: desktop })
  ])
  assert.ok('checkCode' in invited)
  assert.equal(joined.checkCode, invited.checkCode)
  assert.match(joined.checkCode, /^\d{3} \d{3}$/)
  assert.equal(joined.theirs.name, 'desktop')
  assert.deepEqual(joined.theirs.grants, ['sessions'])
  assert.equal(invited.theirs.name, 'phone')
})

test('a wrong secret is refused by the inviter, and the joiner says why', async () => {
  const [a, b] = framedPair()
  const wrong = { ...code, secret: new Uint8Array(16).fill(9) }
  const [joined, invited] = await Promise.allSettled([
    join(a, { code: wrong, me, hello: phone }),
    inviter(b, { code, joinerId: me, hello: desktop })
  ])
  assert.deepEqual(invited.status === 'fulfilled' && invited.value, { refused: 'wrong pairing code' })
  assert.ok(joined.status === 'rejected' && joined.reason instanceof PairError && joined.reason.refused)
  assert.match(String((joined as PromiseRejectedResult).reason), /wrong pairing code/)
})

test('a handshake relayed to another device fails: the prologue binds both peer IDs', async () => {
  const [a, b] = framedPair()
  // The inviter's connection authenticated someone else than the joiner's key.
  const mallory = new Uint8Array(me.length).fill(7)
  const [joined, invited] = await Promise.allSettled([
    join(a, { code, me, hello: phone }),
    inviter(b, { code, joinerId: mallory, hello: desktop })
  ])
  assert.deepEqual(invited.status === 'fulfilled' && invited.value, { refused: 'wrong pairing code' })
  assert.equal(joined.status, 'rejected')
})

test('a tampered answer from the inviter does not verify', async () => {
  const [a, b] = framedPair()
  const joining = join(a, { code, me, hello: phone })
  await b.read(16 * 1024)
  await b.write({ type: 'noise', noise: new Uint8Array(80).fill(1) }, 16 * 1024)
  await assert.rejects(joining, /did not verify/)
})

test('garbage instead of an answer is an error, not a crash', async () => {
  const [a, b] = framedPair()
  const joining = join(a, { code, me, hello: phone })
  await b.read(16 * 1024)
  await b.write({ type: 'noise', noise: 'not bytes' }, 16 * 1024)
  await assert.rejects(joining, /malformed/)
})
