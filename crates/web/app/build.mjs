// Builds the bundle into ../dist (or $LOOPSY_WEB_DIST): index.html, app.js, app.css.
// Deterministic (no dates, no absolute paths, no source maps), so CI can rebuild it elsewhere
// and compare with what is committed.

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
