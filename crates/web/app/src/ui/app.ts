// The page: pairing from the link's fragment or a typed code, the devices and sessions of
// the mesh, and one attached session at a time. Every element the browser tests use carries
// a `data-testid` (docs in crates/web/README.md).

import { Mesh, describe } from '../net/mesh.js'
import { type PairedDevice, knownDevices } from '../net/devices.js'
import { IndexedDbStore } from '../net/store.js'
import { peerIdText } from '../replica/peer-id.js'
import { type Device, type HostedSession, MEMBERS, SESSIONS, devices as memberDevices, registrySessions } from '../replica/records.js'
import { Attachment, listSessions, request } from '../session/client.js'
import { Attention, badgeText, browserPlatform, canAskForNotifications } from './attention.js'
import { RefusedError } from '../wire/admission.js'
import { codeFromFragment } from './keys.js'
import { pairPreview } from './pairing.js'
import { SessionTerminal } from './terminal.js'
import { keepForOffline } from '../offline/register.js'

/** How long to wait before attaching again after a lost connection, growing to the last. */
const RETRY_MS = [250, 500, 1000, 2000, 5000]
/** How often the sessions are looked at again, so that one that starts waiting shows. */
const POLL_MS = 5000

function $<T extends HTMLElement = HTMLElement> (id: string): T {
  const element = document.getElementById(id)
  if (element === null) throw new Error(`the page has no #${id}`)
  return element as T
}

function showError (error: unknown): void {
  const box = $('error')
  box.textContent = describe(error)
  box.hidden = false
}

function clearError (): void { $('error').hidden = true }

const idOf = (bytes: Uint8Array): string => peerIdText(bytes)

class App {
  /** Devices by peer ID: the paired ones, and the members their records name. */
  private devices = new Map<string, PairedDevice>()
  /** The members named by the last device that answered (kept while none answers). */
  private members: Device[] = []
  /** Whether each paired device answered the last refresh. */
  private online = new Map<string, boolean>()
  private sessions: HostedSession[] = []
  private attached: { attachment: Attachment, terminal: SessionTerminal } | null = null
  /** Counts attach requests, so that of two quick taps only the later one attaches. */
  private attachRequests = 0
  private readonly platform = browserPlatform()
  private readonly attention = new Attention(this.platform)

  constructor (private readonly mesh: Mesh) {}

  async start (): Promise<void> {
    $('me').textContent = `this browser: ${this.mesh.node.peerId.toString()}`
    $('pair-form').addEventListener('submit', event => {
      event.preventDefault()
      void this.pair($<HTMLInputElement>('pair-code').value)
    })
    $('pair-code').addEventListener('input', () => { this.showPairTarget() })
    $('refresh').addEventListener('click', () => { void this.refresh() })
    $('session-new').addEventListener('click', () => { void this.newSession() })
    $('detach').addEventListener('click', () => { void this.detach() })
    $('fit').addEventListener('change', () => { this.refit() })
    // Permission is asked from this tap only: browsers refuse (or remember a no) otherwise.
    $('notify-ask').addEventListener('click', () => { void this.attention.ask().then(() => { this.render() }) })
    setInterval(() => { void this.refresh().catch(() => {}) }, POLL_MS)
    addEventListener('resize', () => { this.refit() })
    // A pairing link opened while the page is already open changes only the fragment.
    addEventListener('hashchange', () => { this.codeFromFragment() })
    this.codeFromFragment()
    this.showPairTarget()
    // The paired devices at once, from this browser's storage, before (or without) any of
    // them answering: offline, the page still shows what it knows.
    this.devices = knownDevices(await this.mesh.devices(), this.members, this.mesh.node.peerId.toString())
    this.render()
    await this.refresh()
  }

  /**
   * A code in the fragment fills the pair form and nothing more: whoever opened this window
   * can set the fragment, so pairing waits for the user's tap (`pairing.ts`).
   */
  private codeFromFragment (): void {
    const code = codeFromFragment(location.hash)
    if (code === null) return
    // Off the address bar, so a reload or a shared link does not carry it.
    history.replaceState(null, '', location.pathname + location.search)
    $<HTMLInputElement>('pair-code').value = code
    this.showPairTarget()
  }

  /** The device the Pair button would pair with; the button only when there is one. */
  private showPairTarget (): void {
    const preview = pairPreview($<HTMLInputElement>('pair-code').value, Date.now())
    // In a frame, another page could lay itself over the button and take the tap.
    const framed = window.top !== window.self
    $('pair-target').textContent = framed ? 'This page does not pair inside a frame: open it in its own tab.' : preview.text
    $<HTMLButtonElement>('pair-confirm').disabled = framed || !preview.ok
  }

  private async pair (code: string): Promise<void> {
    clearError()
    $('pair-result').hidden = true
    try {
      if (window.top !== window.self) throw new Error('this page does not pair inside a frame')
      const { device, checkCode } = await this.mesh.pair(code)
      $('paired-with').textContent = `${device.name} (${idOf(device.peerId)})`
      $('check-code').textContent = checkCode
      $('pair-result').hidden = false
      $<HTMLInputElement>('pair-code').value = ''
      this.showPairTarget()
      this.devices.set(idOf(device.peerId), device)
      await this.refresh()
    } catch (error) {
      showError(error)
    }
  }

  /** Devices and sessions, from the first paired device that answers. */
  async refresh (): Promise<void> {
    const paired = await this.mesh.devices()
    let sessions: HostedSession[] | null = null
    let failure: unknown = null
    for (const device of paired) {
      try {
        this.members = memberDevices(await this.mesh.pull(device, MEMBERS))
        sessions = registrySessions(await this.mesh.pull(device, SESSIONS), Date.now())
        this.mark(device, true)
        break
      } catch (error) {
        failure ??= error
        this.mark(device, false)
      }
    }
    this.devices = knownDevices(paired, this.members, this.mesh.node.peerId.toString())
    if (sessions === null) sessions = await this.listEach(paired)
    this.sessions = sessions
    this.render()
    this.attention.update(sessions, s => this.devices.get(idOf(s.host))?.name ?? 'unknown device')
    // No paired device answered: say why (a device that revoked this browser refuses it).
    if (failure !== null && paired.every(d => this.online.get(idOf(d.peerId)) !== true)) {
      showError(`no device answered: ${describe(failure)}`)
    }
  }

  /** Without the registry, each paired device's own sessions. */
  private async listEach (paired: PairedDevice[]): Promise<HostedSession[]> {
    const out: HostedSession[] = []
    for (const device of paired) {
      try {
        for (const info of await listSessions(this.mesh.sessions(device))) out.push({ host: device.peerId, info })
        this.mark(device, true)
      } catch {
        this.mark(device, false)
      }
    }
    return out
  }

  private mark (device: PairedDevice, online: boolean): void {
    this.online.set(idOf(device.peerId), online)
  }

  /**
   * Online when it answered the last refresh or this browser is connected to it; offline
   * when it did not answer; unknown for a member this browser has not tried (one that only
   * the records of another device name, until the page attaches to one of its sessions).
   */
  private deviceState (id: string): 'online' | 'offline' | 'unknown' {
    if (this.online.get(id) === true || this.mesh.connectedTo(id)) return 'online'
    return this.online.get(id) === false ? 'offline' : 'unknown'
  }

  private render (): void {
    const list = $('devices')
    const select = $<HTMLSelectElement>('new-on')
    list.replaceChildren()
    select.replaceChildren()
    for (const [id, device] of this.devices) {
      const item = document.createElement('li')
      item.dataset.testid = 'device'
      item.textContent = device.name
      item.className = this.deviceState(id)
      item.title = id
      list.append(item)
      const option = document.createElement('option')
      option.value = id
      option.textContent = device.name
      select.append(option)
    }
    const sessions = $('sessions')
    sessions.replaceChildren()
    for (const s of this.sessions) {
      const item = document.createElement('li')
      item.dataset.testid = 'session'
      item.textContent = s.info.name ?? s.info.id
      const detail = document.createElement('span')
      detail.className = 'muted'
      const state = s.info.status.state === 'running' ? 'running' : 'ended'
      detail.textContent = `${this.devices.get(idOf(s.host))?.name ?? 'unknown device'} · ${s.info.command.join(' ') || 'shell'} · ${state}`
      item.append(detail)
      if (s.info.waiting !== null) {
        const badge = document.createElement('span')
        badge.className = 'badge'
        badge.dataset.testid = 'waiting'
        badge.textContent = badgeText(s.info.waiting)
        item.append(badge)
      }
      item.addEventListener('click', () => { void this.attach(s) })
      sessions.append(item)
    }
    $('notify-ask').hidden = !canAskForNotifications(this.platform)
  }

  private hostOf (session: HostedSession): PairedDevice {
    const device = this.devices.get(idOf(session.host))
    if (device === undefined) throw new Error('the session\'s device is not known to this browser')
    return device
  }

  private async newSession (): Promise<void> {
    clearError()
    try {
      const device = this.devices.get($<HTMLSelectElement>('new-on').value)
      if (device === undefined) throw new Error('choose a device first')
      const command = $<HTMLInputElement>('new-command').value.trim()
      const argv = command === '' ? [] : command.split(/\s+/)
      const reply = await request(this.mesh.sessions(device), { op: 'new', name: null, argv, rows: 24, cols: 80 })
      await this.refresh()
      if (reply.type === 'created') await this.attach({ host: device.peerId, info: reply.info })
    } catch (error) {
      showError(error)
    }
  }

  private async attach (session: HostedSession): Promise<void> {
    const turn = ++this.attachRequests
    clearError()
    await this.detach()
    // A later tap came while the old session was being let go: that one attaches, not this
    // (both going on would put two terminals in one element and leave one reconnecting).
    if (turn !== this.attachRequests) return
    let device: PairedDevice
    try {
      device = this.hostOf(session)
    } catch (error) {
      showError(error)
      return
    }
    $('attached').hidden = false
    $('attached-name').textContent = session.info.name ?? session.info.id
    let attachment: Attachment | null = null
    const readOnly = $<HTMLInputElement>('read-only').checked
    $('attached-mode').textContent = readOnly ? 'watching (read-only)' : ''
    const terminal = new SessionTerminal($('terminal'), $('keybar'), data => {
      // Keys typed while reconnecting are dropped, not queued: they would land late.
      if (attachment?.connected === true) attachment.keys(data).catch(showError)
    })
    const fit = $<HTMLInputElement>('fit').checked
    const size = fit && !readOnly ? terminal.fittingSize() : { rows: 0, cols: 0 }
    attachment = new Attachment(this.mesh.sessions(device), { session: session.info.id, ...size, screen: terminal.screen, readOnly })
    this.attached = { attachment, terminal }
    void this.keepAttached(attachment)
  }

  /** Attaches again from the output offset whenever the connection is lost. */
  private async keepAttached (attachment: Attachment): Promise<void> {
    let lastOffset = attachment.offset
    for (let tries = 0; ; tries++) {
      let end
      try {
        end = await attachment.run()
      } catch (error) {
        showError(error)
        return
      }
      if (end.why === 'exited') { showError(`the session ended${end.code === null ? '' : ` (exit code ${end.code})`}`); return }
      if (end.why === 'detached') return
      // Refused while resuming: maybe busy for a moment, maybe revoked. Say so, and go on
      // trying (a busy host admits it again shortly).
      if (end.error instanceof RefusedError) showError(end.error)
      // A connection that carried output was worth having: back to the shortest wait.
      if (attachment.offset !== lastOffset) tries = 0
      lastOffset = attachment.offset
      await new Promise(resolve => setTimeout(resolve, RETRY_MS[Math.min(tries, RETRY_MS.length - 1)]))
    }
  }

  /**
   * With "fit" on, the session takes this screen's size (the host resizes it for every
   * client); off, it is left as the others set it.
   */
  private refit (): void {
    const current = this.attached
    if (current === null) return
    const size = $<HTMLInputElement>('fit').checked ? current.terminal.fittingSize() : { rows: 0, cols: 0 }
    if (size.rows > 0 && size.cols > 0) current.terminal.term.resize(size.cols, size.rows)
    current.attachment.resize(size.rows, size.cols).catch(() => {
      // Not connected now: the size goes with the next attach.
    })
  }

  private async detach (): Promise<void> {
    const current = this.attached
    this.attached = null
    if (current === null) return
    await current.attachment.detach()
    current.terminal.dispose()
    $('attached').hidden = true
  }
}

async function main (): Promise<void> {
  keepForOffline()
  try {
    const mesh = await Mesh.start(await IndexedDbStore.open(), { name: 'browser' })
    await new App(mesh).start()
  } catch (error) {
    showError(error)
  }
}

void main()
