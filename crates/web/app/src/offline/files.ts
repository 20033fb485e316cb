// What the service worker keeps for offline use: the app's own three files, and nothing a
// device or a relay says. Pure, so the choice is tested without a browser.

/** The files of the bundle, by the path they are cached under. */
export const APP_FILES = ['/index.html', '/app.js', '/app.css'] as const

/**
 * The cache key a request is answered from when the network fails, or null when the worker
 * leaves the request alone: only GETs of the app's own files on its own origin (the page
 * itself as `/`), with no query string, so that nothing else is ever stored.
 */
export function cachedPath (method: string, url: string, origin: string): string | null {
  if (method !== 'GET') return null
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return null
  }
  if (parsed.origin !== origin || parsed.search !== '') return null
  const path = parsed.pathname === '/' ? '/index.html' : parsed.pathname
  return (APP_FILES as readonly string[]).includes(path) ? path : null
}

/** The cache of one build; older builds' caches are deleted when a new worker starts. */
export function cacheName (build: string): string {
  return `loopsy-app-${build}`
}
