// Builds the bundle into ../dist (or $LOOPSY_WEB_DIST): index.html, app.js, app.css, and
// sw.js, the service worker that keeps the other three for offline use.
// Deterministic (no dates, no absolute paths, no source maps), so CI can rebuild it elsewhere
// and compare with what is committed.

import { createHash } from 'node:crypto'
import { build } from 'esbuild'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const dist = process.env.LOOPSY_WEB_DIST ?? join(here, '..', 'dist')
mkdirSync(dist, { recursive: true })

await build({
  absWorkingDir: here,
  entryPoints: ['src/ui/app.ts'],
  outfile: join(dist, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022', 'chrome111', 'safari16.4', 'firefox115'],
  minify: true,
  legalComments: 'eof',
  sourcemap: false,
  charset: 'utf8',
  define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
  logLevel: 'warning'
})

const css = [
  readFileSync(join(here, 'node_modules/@xterm/xterm/css/xterm.css'), 'utf8'),
  readFileSync(join(here, 'src/ui/style.css'), 'utf8')
].join('\n')
writeFileSync(join(dist, 'app.css'), css)
copyFileSync(join(here, 'src/ui/index.html'), join(dist, 'index.html'))

// The worker names its cache after the files it keeps, so a new build replaces the old copy.
const files = ['index.html', 'app.js', 'app.css'].map(f => readFileSync(join(dist, f)))
const hash = createHash('sha256')
for (const file of files) hash.update(file)
await build({
  absWorkingDir: here,
  entryPoints: ['src/offline/worker.ts'],
  outfile: join(dist, 'sw.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2022', 'chrome111', 'safari16.4', 'firefox115'],
  minify: true,
  sourcemap: false,
  charset: 'utf8',
  define: { BUILD: JSON.stringify(hash.digest('hex').slice(0, 16)) },
  logLevel: 'warning'
})
