import assert from 'node:assert/strict'
import { test } from 'node:test'
import { barKey, codeFromFragment, withCtrl } from '../src/ui/keys.js'

test('the key bar sends what a terminal sends', () => {
  assert.equal(barKey('esc'), '\x1b')
  assert.equal(barKey('tab'), '\t')
  assert.equal(barKey('ctrl-c'), '\x03')
  assert.deepEqual(['up', 'down', 'right', 'left'].map(k => barKey(k as 'up')), ['\x1b[A', '\x1b[B', '\x1b[C', '\x1b[D'])
})

test('Ctrl applies to the next key typed', () => {
  assert.equal(withCtrl('c'), '\x03')
  assert.equal(withCtrl('C'), '\x03')
  assert.equal(withCtrl('d'), '\x04')
  assert.equal(withCtrl('['), '\x1b')
  assert.equal(withCtrl('?'), '\x7f')
  assert.equal(withCtrl('1'), '1')
  assert.equal(withCtrl(''), '')
})

test('the pairing code comes from the fragment, and only from it', () => {
  assert.equal(codeFromFragment('#code=LOOPSY1-ABC'), 'LOOPSY1-ABC')
  assert.equal(codeFromFragment('#x=1&code=LOOPSY1-ABC'), 'LOOPSY1-ABC')
  assert.equal(codeFromFragment('#code='), null)
  assert.equal(codeFromFragment(''), null)
})
