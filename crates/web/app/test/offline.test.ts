import assert from 'node:assert/strict'
import { test } from 'node:test'
import { cacheName, cachedPath } from '../src/offline/files.js'

const ORIGIN = 'https://relay.example.net'

test('the worker keeps the app\'s own files, the page under its own name', () => {
  assert.equal(cachedPath('GET', `${ORIGIN}/`, ORIGIN), '/index.html')
  assert.equal(cachedPath('GET', `${ORIGIN}/index.html`, ORIGIN), '/index.html')
  assert.equal(cachedPath('GET', `${ORIGIN}/app.js`, ORIGIN), '/app.js')
  assert.equal(cachedPath('GET', `${ORIGIN}/app.css`, ORIGIN), '/app.css')
})

test('nothing else is cached: other paths, queries, methods and origins', () => {
  assert.equal(cachedPath('GET', `${ORIGIN}/sw.js`, ORIGIN), null)
  assert.equal(cachedPath('GET', `${ORIGIN}/app.js?v=2`, ORIGIN), null)
  assert.equal(cachedPath('GET', `${ORIGIN}/secret`, ORIGIN), null)
  assert.equal(cachedPath('POST', `${ORIGIN}/app.js`, ORIGIN), null)
  assert.equal(cachedPath('GET', 'https://elsewhere.example/app.js', ORIGIN), null)
  assert.equal(cachedPath('GET', 'not a url', ORIGIN), null)
})

test('each build has a cache of its own', () => {
  assert.notEqual(cacheName('a1'), cacheName('b2'))
})
