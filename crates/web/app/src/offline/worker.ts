// The service worker (served as /sw.js): the app opens with no network after its first
// load, where the browser allows a worker at all (a secure context: the relay's HTTPS
// origin, or localhost; not a node's plain-HTTP LAN page).
//
// Network first: online, the page is always the one the device or relay serves now (a
// newer build takes effect at once); the cached copy is used only when the fetch fails.
// Only the app's own files are cached (see files.ts); WebSockets never pass through here.

import { APP_FILES, cacheName, cachedPath } from './files.js'

// The build's hash, put in by build.mjs.
declare const BUILD: string

interface ExtendableEvent extends Event { waitUntil: (p: Promise<unknown>) => void }
interface FetchEvent extends ExtendableEvent { request: Request, respondWith: (r: Promise<Response>) => void }
interface WorkerScope {
  location: Location
  skipWaiting: () => Promise<void>
  clients: { claim: () => Promise<void> }
  addEventListener: ((type: 'install' | 'activate', listener: (event: ExtendableEvent) => void) => void) &
  ((type: 'fetch', listener: (event: FetchEvent) => void) => void)
}

const scope = self as unknown as WorkerScope
const CACHE = cacheName(BUILD)

scope.addEventListener('install', event => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE)
    await cache.addAll([...APP_FILES])
    await scope.skipWaiting()
  })())
})

scope.addEventListener('activate', event => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name !== CACHE) await caches.delete(name)
    }
    await scope.clients.claim()
  })())
})

scope.addEventListener('fetch', event => {
  const key = cachedPath(event.request.method, event.request.url, scope.location.origin)
  if (key === null) return
  event.respondWith(answer(event.request, key))
})

async function answer (request: Request, key: string): Promise<Response> {
  try {
    const response = await fetch(request)
    if (response.ok) await keep(key, response)
    return response
  } catch (error) {
    const cached = await caches.match(key, { cacheName: CACHE })
    if (cached !== undefined) return cached
    throw error
  }
}

/** Keeps `response` as the copy of `key`, unless the copy is of this version already (its
 * entity tag): opening the app does not write the whole bundle again each time. */
async function keep (key: string, response: Response): Promise<void> {
  const cache = await caches.open(CACHE)
  const tag = response.headers.get('ETag')
  const kept = await cache.match(key)
  if (tag !== null && kept?.headers.get('ETag') === tag) return
  await cache.put(key, response.clone())
}
